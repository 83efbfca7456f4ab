"""The errors every layer may raise about a config. They live at the ground (cvlibs) so a
component can report a bad argument without importing the config machinery above it."""
from __future__ import annotations

from paddleseg_unet.cvlibs.registry import RegistryError


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


__all__ = ["ConfigError", "RegistryError"]
