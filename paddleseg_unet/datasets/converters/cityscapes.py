"""Cityscapes: ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip`` or the tree.

Writes, for the train and val splits as distributed (test has no public labels):
``DST/leftImg8bit/{split}/CITY/X_leftImg8bit.png`` (copied), ``DST/gtFine/{split}/CITY/
X_gtFine_labelIds.png`` (copied), ``X_gtFine_labelTrainIds.png`` (the standard 34 -> 19
mapping, every other id 255) and ``DST/{split}_list.txt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from tqdm import tqdm

from paddleseg_unet.cvlibs.registry import CONVERTERS

from .common import archive_converter
from .common import (SPLITS, ConversionError, ConversionSummary, Entry, PathLike, Source,
                     check_destination, decode_image, raise_if_missing, staging, write_bytes,
                     write_lists, write_png)

# labelId -> trainId of the 19 evaluated classes (Cityscapes' labels.py); the rest is 255.
TRAIN_IDS: Dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
IGNORE = 255
_LUT = np.full(256, IGNORE, np.uint8)
_LUT[list(TRAIN_IDS)] = list(TRAIN_IDS.values())

_IMAGE = r"(?:^|/)leftImg8bit/(?P<key>(?:train|val)/[^/]+/[^/]+)_leftImg8bit\.png$"
_LABEL = r"(?:^|/)gtFine/(?P<key>(?:train|val)/[^/]+/[^/]+)_gtFine_labelIds\.png$"


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array (uint8) to trainIds."""
    return _LUT[label_ids]


def _read_label_ids(entry: Entry, data: bytes) -> np.ndarray:
    image = decode_image(data, entry.location)
    if image.mode not in ("L", "P"):
        raise ConversionError(f"{entry.location}: {image.mode} image, expected a single-channel "
                              f"labelIds PNG")
    return np.asarray(image)


@CONVERTERS.register("cityscapes")
@archive_converter("Cityscapes (leftImg8bit/, gtFine/ labelIds -> 19 trainIds)")
def convert(src: PathLike, dst: PathLike, force: bool = False) -> ConversionSummary:
    check_destination(src, dst, force)
    with Source(src, exclude=dst) as source:
        images, labels = source.index(_IMAGE), source.index(_LABEL)
        if not images and not labels:
            raise ConversionError(f"Cityscapes: no leftImg8bit/{{train,val}}/CITY/"
                                  f"*_leftImg8bit.png found in {src}; pass the folder holding "
                                  f"leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip")
        missing = [f"gtFine/{k}_gtFine_labelIds.png" for k in sorted(set(images) - set(labels))]
        missing += [f"leftImg8bit/{k}_leftImg8bit.png" for k in sorted(set(labels) - set(images))]
        raise_if_missing("Cityscapes", missing, Path(src))
        lists: Dict[str, List[str]] = {split: [] for split in SPLITS}
        pixels = ignored = 0
        with staging(dst, force) as out:
            for key in tqdm(sorted(images), desc="Cityscapes", unit="img", disable=None,
                            leave=False):
                ids_bytes, image_bytes = labels[key].read(), images[key].read()
                ids = _read_label_ids(labels[key], ids_bytes)
                image = decode_image(image_bytes, images[key].location)
                if image.size != (ids.shape[1], ids.shape[0]):
                    raise ConversionError(
                        f"{labels[key].location} is {ids.shape[1]}x{ids.shape[0]} but its image "
                        f"{images[key].location} is {image.size[0]}x{image.size[1]}; "
                        f"replace the file")
                split = key.split("/", 1)[0]
                rel_img = f"leftImg8bit/{key}_leftImg8bit.png"
                rel_lbl = f"gtFine/{key}_gtFine_labelTrainIds.png"
                write_bytes(out / rel_img, image_bytes)
                write_bytes(out / f"gtFine/{key}_gtFine_labelIds.png", ids_bytes)
                train_ids = to_train_ids(ids)
                write_png(out / rel_lbl, train_ids)
                lists[split].append(f"{rel_img} {rel_lbl}")
                pixels += train_ids.size
                ignored += int((train_ids == IGNORE).sum())
            write_lists(out, lists)
    return ConversionSummary("Cityscapes", str(dst), {s: len(v) for s, v in lists.items()},
                             {"ignore_fraction": ignored / max(pixels, 1)})
