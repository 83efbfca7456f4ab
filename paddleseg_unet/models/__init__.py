"""Segmentation models and their losses; importing this package registers them in
``MODELS`` and ``LOSSES``."""
from paddleseg_unet.models import losses  # noqa: F401
from paddleseg_unet.models.unet import UNet

__all__ = ["UNet", "losses"]
