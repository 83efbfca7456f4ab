"""paddleseg_unet: UNet semantic segmentation on PaddlePaddle, PaddleSeg-compatible."""
import logging as _logging
import os as _os

__version__ = "0.1.0"

# Paddle sets OMP_NUM_THREADS=1 when it is imported and unset; remember what the user asked
# for before that happens (utils.device reads it).
USER_OMP_NUM_THREADS = _os.environ.get("OMP_NUM_THREADS")

# A library prints nothing unless the application asks: no handler but a NullHandler, no
# level (the commands call utils.logger.setup_logger).
_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def __getattr__(name: str):  # ``from paddleseg_unet import Segmenter`` without importing Paddle early
    if name in ("Segmenter", "SegmentationResult"):
        from paddleseg_unet.apis import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'paddleseg_unet' has no attribute {name!r}")
