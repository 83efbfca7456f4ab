"""The package logger: PaddleSeg-style lines (``2026-01-01 12:00:00 [INFO] ...``).

A library stays silent until its user decides: importing the package attaches only a
``NullHandler`` (``paddleseg_unet/__init__.py``) and sets no level, so the records reach whatever the application configured
on the root logger (nothing by default). The commands call :func:`setup_logger`."""
from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("paddleseg_unet")


def setup_logger(log_file: str = "", rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Log to stdout (and ``log_file``) on rank 0 only, so multi-device runs print once."""
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level if rank == 0 else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger
