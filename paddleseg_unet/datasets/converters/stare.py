"""STARE: ``stare-images.tar`` + ``labels-ah.tar`` (+ ``labels-vk.tar``) or folders of them.

Only the 20 hand-labelled images are used (the full image archive holds ~380 more);
ground truth is Hoover's ``ah`` set. Split: the 20 sorted by name, first 10 train, last 10
val. STARE has no FOV masks: they are derived from the images (see ``derive_fov``).
"""
from __future__ import annotations

from paddleseg_unet.cvlibs.registry import CONVERTERS

from .common import archive_converter
from .common import ConversionSummary, PathLike, RetinaPlan, Source, run_retina

LABELLED = ("im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081",
            "im0082", "im0139", "im0162", "im0163", "im0235", "im0236", "im0239", "im0240",
            "im0255", "im0291", "im0319", "im0324")
_IMAGE = r"(?:^|/)(?P<key>im\d{4})\.ppm$"  # '.gz' is already stripped by Source
_LABEL = r"(?:^|/)(?P<key>im\d{4})\.ah\.ppm$"
_SECOND = r"(?:^|/)(?P<key>im\d{4})\.vk\.ppm$"
EXPECTED = "~7.6% of all pixels (ah labels)"


def _collect(source: Source) -> RetinaPlan:
    images = source.index(_IMAGE)
    plan = RetinaPlan(notes=["FOV masks derived from the images (STARE distributes none)"])
    plan.add_pairs(LABELLED, 10, images, source.index(_LABEL),
                   lambda n: (f"stare-images/{n}.ppm.gz", f"labels-ah/{n}.ah.ppm.gz"))
    unlabelled = len(set(images) - set(LABELLED))
    if unlabelled:
        plan.notes.append(f"ignored {unlabelled} unlabelled images")
    if source.index(_SECOND):
        plan.notes.append("labels-vk (second observer) not used; ground truth is labels-ah")
    return plan


@CONVERTERS.register("stare")
@archive_converter("STARE (stare-images/, labels-ah/)")
def convert(src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    return run_retina("STARE", src, dst, force, _collect, EXPECTED)
