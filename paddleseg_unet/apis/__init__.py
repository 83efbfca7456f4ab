"""The top layer: config -> builder -> components -> engine, and the start-up every
command shares. Nothing below imports from here."""
from paddleseg_unet.apis.builder import CONFIG_RULES, SegBuilder, check_config

__all__ = ["CONFIG_RULES", "SegBuilder", "check_config"]
