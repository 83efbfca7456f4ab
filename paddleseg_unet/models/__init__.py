"""Segmentation models; importing this package registers them in ``MODELS``."""
from paddleseg_unet.models.unet import UNet

__all__ = ["UNet"]
