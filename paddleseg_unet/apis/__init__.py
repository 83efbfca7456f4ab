"""The top layer: config -> builder -> components -> engine, and the start-up every
command shares (``cli``). Nothing below imports from here.

Attributes load on first use, so a tool that imports ``apis.cli`` to parse its flags does
not pay for importing Paddle first."""
import importlib
from typing import Any

_LAZY = {"SegBuilder": "builder", "check_config": "builder", "CONFIG_RULES": "builder"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
