"""The errors every layer may raise about a config. They live at the ground (cvlibs) so a
component can report a bad argument without importing the config machinery above it."""
from __future__ import annotations

from typing import Optional

__all__ = ["ConfigError", "ComponentArgumentError", "RegistryError"]


class RegistryError(KeyError):
    """An unknown ``type``, a duplicate registration or a bad constructor argument."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class ComponentArgumentError(ValueError):
    """A constructor argument a component rejects. Components raise it (or a plain
    ValueError/TypeError) with a message saying what is wrong; ``argument`` names the
    argument so that ``build`` can point at its config key."""

    def __init__(self, message: str, argument: Optional[str] = None) -> None:
        super().__init__(message)
        self.argument = argument
