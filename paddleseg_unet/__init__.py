"""paddleseg_unet: UNet semantic segmentation on PaddlePaddle, PaddleSeg-compatible."""
__version__ = "0.1.0"
