"""CHASE DB1: ``CHASEDB1.zip`` or the flat folder of ``Image_NN{L,R}*`` files.

Ground truth ``_1stHO.png``. Split: the first 20 images by name (Image_01L..Image_10R)
train, the last 8 val. There is no FOV mask: it is derived from the image (``derive_fov``).
"""
from __future__ import annotations

from paddleseg_unet.cvlibs.registry import CONVERTERS

from .common import archive_converter
from .common import ConversionSummary, PathLike, RetinaPlan, Source, run_retina

NAMES = tuple(f"Image_{nn:02d}{eye}" for nn in range(1, 15) for eye in "LR")
_IMAGE = r"(?:^|/)(?P<key>Image_\d\d[LR])(?i:\.jpe?g)$"
_LABEL = r"(?:^|/)(?P<key>Image_\d\d[LR])_1stHO(?i:\.png)$"
EXPECTED = "~6.9% of all pixels (1stHO labels)"


def _collect(source: Source) -> RetinaPlan:
    plan = RetinaPlan(notes=["FOV masks derived from the images (CHASE DB1 distributes none)"])
    plan.add_pairs(NAMES, 20, source.index(_IMAGE), source.index(_LABEL),
                   lambda n: (f"{n}.jpg", f"{n}_1stHO.png"))
    return plan


@CONVERTERS.register("chasedb1")
@archive_converter("CHASE DB1 (Image_NN{L,R}.jpg, *_1stHO.png)")
def convert(src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    return run_retina("CHASE DB1", src, dst, force, _collect, EXPECTED)
