"""Build-time label checks: a run must not silently learn (or score) nothing.

A dataset built for training or evaluation reads a bounded, evenly spaced sample of its
labels once (``check_label_sample``) and refuses labels that would make the run
meaningless:

- labels holding only 0 and the ignore value: the binary mask saved as 0/255, whose
  foreground is then "ignore" (not learnt, not scored: Dice 0, AUC nan);
- the ignore value covering more than half of the sampled label pixels.

In mode 'train' a class absent from every label is a warning (when the sample is the
whole set; a partial sample cannot tell). The per-read check
(values outside 0..K-1 other than the ignore value) stays in ``image_io.check_label_values``;
nothing here runs on the normal data path.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from paddleseg_unet.datasets.image_io import DatasetError, check_label_values, read_label
from paddleseg_unet.utils.logger import logger

__all__ = ["LABEL_SAMPLE_SIZE", "IGNORE_MAJORITY", "check_label_sample", "class_pixel_counts",
           "converter_command"]

# Up to this many labels are read at build time (all of them in sets this small or smaller).
LABEL_SAMPLE_SIZE = 20
# Ignore above this fraction of the sampled label pixels is an error. Cityscapes' ignore
# share is ~10% over a sample (rarely over 40% in one frame); the retina sets have none.
IGNORE_MAJORITY = 0.5
_SPLIT_DIRS = ("train", "val", "test")


def class_pixel_counts(label: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """Pixels per class 0..K-1, then the ignore count (K+1 values); the label's values
    must already have passed ``check_label_values``."""
    if label.dtype == np.uint8:
        values = np.arange(256)
        counts = np.bincount(label.ravel(), minlength=256)
    else:
        values, counts = np.unique(label, return_counts=True)
    out = np.zeros(num_classes + 1, np.int64)
    in_range = (values >= 0) & (values < num_classes)
    out[values[in_range]] = counts[in_range]
    out[-1] = counts[values == ignore_index].sum()
    return out


def _split_parent(folder: str) -> str:
    """A ``.../train`` folder stands for its parent (the converter detects the split)."""
    return os.path.dirname(folder) if os.path.basename(folder) in _SPLIT_DIRS else folder


def converter_command(img_path: str, label_path: str, dataset_root: Optional[str]) -> str:
    """The ``tools/convert_dataset.py folder`` command that rewrites this dataset's masks."""
    from paddleseg_unet.datasets.converters.folder import default_name  # converters are heavier

    images = _split_parent(os.path.dirname(os.path.abspath(img_path)))
    masks = _split_parent(os.path.dirname(os.path.abspath(label_path)))
    img_stem = os.path.splitext(os.path.basename(img_path))[0]
    mask_stem = os.path.splitext(os.path.basename(label_path))[0]
    suffix = ""
    if mask_stem != img_stem and mask_stem.startswith(img_stem):
        suffix = f" --mask_suffix {mask_stem[len(img_stem):]}"
    base = os.path.abspath(dataset_root) if dataset_root else os.path.dirname(images)
    dst = base.rstrip(os.sep) + "_converted"
    return (f"python tools/convert_dataset.py folder --images {images} --masks {masks}"
            f"{suffix} {dst}, then train with python tools/train.py --config "
            f"{os.path.join(dst, 'unet_' + default_name(dst) + '.yml')}")


def check_label_sample(records: Sequence, num_classes: int, ignore_index: int, mode: str,
                       dataset_root: Optional[str] = None,
                       max_samples: int = LABEL_SAMPLE_SIZE) -> Optional[np.ndarray]:
    """Read up to ``max_samples`` evenly spaced labels of ``records`` and raise a
    DatasetError for the meaningless cases above; return the summed class counts
    (K values + ignore), or None when no record has a label."""
    labelled = [r for r in records if r.label_path is not None]
    if not labelled:
        return None
    picks = np.unique(np.linspace(0, len(labelled) - 1, min(len(labelled), max_samples))
                      .round().astype(int))
    total = np.zeros(num_classes + 1, np.int64)
    worst = (-1.0, None)  # (ignore fraction, record) of the most-ignored label
    for i in picks:
        record = labelled[i]
        try:
            label = read_label(record.label_path)
            check_label_values(label, num_classes, ignore_index, record.label_path)
        except DatasetError as e:
            raise type(e)(f"{record.where}: {e}") from None
        counts = class_pixel_counts(label, num_classes, ignore_index)
        total += counts
        fraction = counts[-1] / max(int(counts.sum()), 1)
        if fraction > worst[0]:
            worst = (fraction, record)
    ignored, pixels = int(total[-1]), int(total.sum())
    fraction, record = worst

    def fix() -> str:
        return (f"If {ignore_index} marks a class in your masks (the foreground of a 0/255 "
                f"mask), convert them to class indices 0..K-1 ({ignore_index} only for "
                f"unlabelled pixels): "
                + converter_command(record.img_path, record.label_path, dataset_root)
                + " (see docs/custom_data.md)")
    if num_classes >= 2 and ignored and not total[1:num_classes].any():
        raise DatasetError(
            f"{record.where}: label {record.label_path} holds only 0 and {ignore_index}, as "
            f"do all {len(picks)} sampled labels: {ignore_index} is the ignore value "
            f"(pixels neither learnt nor scored), so this dataset has no foreground and the "
            f"run would learn nothing (Dice 0, AUC nan). {fix()}")
    if ignored > IGNORE_MAJORITY * pixels:
        raise DatasetError(
            f"{record.where}: the ignore value {ignore_index} covers {ignored / pixels:.0%} "
            f"of the pixels of {len(picks)} sampled labels ({fraction:.0%} of "
            f"{record.label_path}): {ignore_index} means 'ignore' (pixels neither learnt "
            f"nor scored), so most of the data would be wasted. {fix()}")
    absent = [k for k in range(num_classes) if not total[k]]
    # Only a complete look can tell: 20 of Cityscapes' 2975 frames often miss a rare class.
    if mode == "train" and absent and len(picks) == len(labelled):
        logger.warning(f"class{'es' if len(absent) > 1 else ''} "
                       f"{', '.join(map(str, absent))} of 0..{num_classes - 1} never occur"
                       f"{'' if len(absent) > 1 else 's'} in the {len(picks)} training "
                       f"labels ({labelled[0].where.rsplit(' line ', 1)[0]}): the model "
                       f"cannot learn {'them' if len(absent) > 1 else 'it'}; check "
                       f"num_classes and the label values")
    return total
