"""Converters from the official dataset downloads to the layout the toolkit reads.

``convert(name, src, dst, force=False)`` with ``name`` one of :data:`DATASETS`. SRC is the
extracted folder, a folder holding the downloaded archives, or one archive. Retina sets are
written as ``DST/{images,annotations,fov}/{train,val}/NAME.png`` (labels and FOV 0/1) plus
``DST/{train,val}_list.txt``; Cityscapes as ``DST/leftImg8bit`` + ``DST/gtFine`` with
``*_gtFine_labelTrainIds.png``. See docs/datasets.md.
"""
from __future__ import annotations

from typing import Callable, Dict

from . import chasedb1, cityscapes, drive, hrf, stare
from .common import ConversionError, ConversionSummary, PathLike, derive_fov

CONVERTERS: Dict[str, Callable[..., ConversionSummary]] = {
    "drive": drive.convert,
    "stare": stare.convert,
    "chasedb1": chasedb1.convert,
    "hrf": hrf.convert,
    "cityscapes": cityscapes.convert,
}
DATASETS = tuple(CONVERTERS)

__all__ = ["CONVERTERS", "DATASETS", "ConversionError", "ConversionSummary", "convert",
           "derive_fov"]


def convert(name: str, src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    """Convert dataset ``name`` from SRC into DST (atomically); return what was written.

    Raises ConversionError (a one-line user message) for a bad SRC, a non-empty DST without
    ``force``, or a file that is missing, unreadable or of the wrong size.
    """
    converter = CONVERTERS.get(str(name).lower())
    if converter is None:
        raise ConversionError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return converter(src, dst, force=force)
