"""HRF: ``all.zip`` or a folder with ``images/``, ``manual1/`` and ``mask/``.

Images are ``NN_{h,g,dr}.jpg`` (``dr`` ships as ``.JPG``), labels ``manual1/NN_x.tif``,
FOV masks ``mask/NN_x_mask.tif``. Split: NN 01..05 of each category train, the rest val.
Whatever images are present are converted; an image without a label file is reported and
skipped (the public copies lack 11_h, 12_h and 13_h).
"""
from __future__ import annotations

from paddleseg_unet.cvlibs.registry import CONVERTERS

from .common import archive_converter
from .common import (ConversionSummary, PathLike, RetinaItem, RetinaPlan, Source, require,
                     run_retina)

_IMAGE = r"(?:^|/)(?P<key>\d\d_(?:h|g|dr))(?i:\.jpe?g)$"
_LABEL = r"(?:^|/)(?P<key>\d\d_(?:h|g|dr))(?i:\.tiff?)$"
_MASK = r"(?:^|/)(?P<key>\d\d_(?:h|g|dr))_mask(?i:\.tiff?)$"
TRAIN_MAX_NN = 5
EXPECTED = "~9% of the pixels inside the mask"


def _collect(source: Source) -> RetinaPlan:
    images, labels, masks = (source.index(p) for p in (_IMAGE, _LABEL, _MASK))
    plan = RetinaPlan()
    for name in sorted(images):
        label = labels.get(name)
        if label is None:
            plan.skipped.append(f"{name}: no label file manual1/{name}.tif")
            continue
        mask = require(masks, name, f"mask/{name}_mask.tif", plan.missing)
        if mask:
            split = "train" if int(name[:2]) <= TRAIN_MAX_NN else "val"
            plan.items.append(RetinaItem(name, split, images[name], label, mask))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        plan.notes.append(f"labels without an image, ignored: {', '.join(orphans)}")
    return plan


@CONVERTERS.register("hrf")
@archive_converter("HRF (images/, manual1/, mask/)")
def convert(src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    return run_retina("HRF", src, dst, force, _collect, EXPECTED)
