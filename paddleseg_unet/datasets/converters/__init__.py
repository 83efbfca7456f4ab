"""Converters from the official dataset downloads to the layout the toolkit reads.

``convert(name, src, dst, force=False)`` with ``name`` one of :data:`DATASETS`. SRC is the
extracted folder, a folder holding the downloaded archives, or one archive. Retina sets are
written as ``DST/{images,annotations,fov}/{train,val}/NAME.png`` (labels and FOV 0/1) plus
``DST/{train,val}_list.txt``; Cityscapes as ``DST/leftImg8bit`` + ``DST/gtFine`` with
``*_gtFine_labelTrainIds.png``. See docs/datasets.md.
"""
from __future__ import annotations

from paddleseg_unet.cvlibs.registry import CONVERTERS

from . import chasedb1, cityscapes, drive, folder, hrf, stare  # noqa: F401 - registers them
from .common import (ArchiveConverter, ConversionError, ConversionSummary, PathLike,
                     derive_fov)

# The official downloads (``convert(name, src, dst)``); ``folder`` takes other arguments.
DATASETS = tuple(n for n in CONVERTERS.names() if isinstance(CONVERTERS.get(n), ArchiveConverter))

__all__ = ["CONVERTERS", "DATASETS", "ConversionError", "ConversionSummary", "convert",
           "derive_fov"]


def convert(name: str, src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    """Convert dataset ``name`` (one of :data:`DATASETS`) from SRC into DST (atomically);
    return what was written.

    Raises ConversionError (a one-line user message) for a bad SRC, a non-empty DST without
    ``force``, or a file that is missing, unreadable or of the wrong size.
    """
    if str(name).lower() not in DATASETS:
        raise ConversionError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return CONVERTERS.get(str(name).lower())(src, dst, force=force)
