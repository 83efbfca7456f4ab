"""DRIVE: ``DRIVE.zip``, ``training.zip`` + ``test.zip`` or the extracted folder.

Official split: images 21..40 (``training/``) train, 01..20 (``test/``) val. Ground truth
``1st_manual``; FOV from the distributed ``mask`` GIFs.
"""
from __future__ import annotations

from paddleseg_unet.cvlibs.registry import CONVERTERS

from .common import archive_converter
from .common import (ConversionSummary, PathLike, RetinaItem, RetinaPlan, Source, require,
                     run_retina)

# Matched on the file name; folder names vary between the copies in circulation.
_IMAGE = r"(?:^|/)(?P<key>\d\d_(?:training|test))\.tiff?$"
_LABEL = r"(?:^|/)(?P<key>\d\d)_manual1\.gif$"
_MASK = r"(?:^|/)(?P<key>\d\d_(?:training|test))_mask\.gif$"
SPLITS = (("train", "training", range(21, 41)), ("val", "test", range(1, 21)))
EXPECTED = "~8.6% of all pixels, ~12.5% inside the FOV"


def _collect(source: Source) -> RetinaPlan:
    images, labels, masks = (source.index(p) for p in (_IMAGE, _LABEL, _MASK))
    plan = RetinaPlan()
    for split, folder, numbers in SPLITS:
        for nn in numbers:
            name = f"{nn:02d}_{folder}"
            image = require(images, name, f"{folder}/images/{name}.tif", plan.missing)
            label = require(labels, f"{nn:02d}", f"{folder}/1st_manual/{nn:02d}_manual1.gif",
                            plan.missing)
            mask = require(masks, name, f"{folder}/mask/{name}_mask.gif", plan.missing)
            if image and label and mask:
                plan.items.append(RetinaItem(name, split, image, label, mask))
    return plan


@CONVERTERS.register("drive")
@archive_converter("DRIVE (training/, test/ with 1st_manual and mask)")
def convert(src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    return run_retina("DRIVE", src, dst, force, _collect, EXPECTED)
