"""Data transforms: PaddleSeg-compatible, registered in ``TRANSFORMS``, driven by a per-sample
``numpy.random.Generator``. See :mod:`.transforms` for the sample contract."""
from paddleseg_unet.transforms import functional
from paddleseg_unet.transforms.transforms import (Compose, Normalize, Padding, RandomDistort,
                                                  RandomHorizontalFlip, RandomPaddingCrop,
                                                  RandomRotation, RandomVerticalFlip, Resize,
                                                  ResizeByLong, ResizeByShort,
                                                  ResizeStepScaling)

__all__ = [
    "Compose", "Normalize", "Padding", "RandomDistort", "RandomHorizontalFlip",
    "RandomPaddingCrop", "RandomRotation", "RandomVerticalFlip", "Resize", "ResizeByLong",
    "ResizeByShort", "ResizeStepScaling", "functional",
]
