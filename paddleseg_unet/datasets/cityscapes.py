"""Cityscapes (19 train classes, 255 = ignore), in the official folder layout::

    ROOT/leftImg8bit/{train,val,test}/CITY/X_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/CITY/X_gtFine_labelTrainIds.png

The official archives ship ``labelIds`` (34 ids); ``labelTrainIds`` are derived from them
by ``python tools/convert_dataset.py cityscapes SRC DST``. Images are paired with labels
by name; mode 'test' accepts images without labels.
"""
from __future__ import annotations

import glob
import os

from paddleseg_unet.cvlibs.registry import DATASETS
from paddleseg_unet.datasets.dataset import Record, SegDataset, TransformsArg
from paddleseg_unet.datasets.image_io import DatasetError, DatasetNotFoundError

__all__ = ["Cityscapes"]

_IMG_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


@DATASETS.register()
class Cityscapes(SegDataset):
    """Cityscapes fine annotations; ``mode`` picks the split folder."""

    NUM_CLASSES = 19
    CLASS_NAMES = (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle")
    PALETTE = (  # the official colours of the 19 train ids
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32))

    def __init__(self, dataset_root: str, transforms: TransformsArg = None,
                 mode: str = "train", edge: bool = False) -> None:
        super().__init__(transforms, self.NUM_CLASSES, mode, ignore_index=255, edge=edge)
        self.dataset_root = dataset_root
        img_dir = os.path.join(dataset_root, "leftImg8bit", self.mode)
        if not os.path.isdir(img_dir):
            raise DatasetNotFoundError(
                f"Cityscapes: {img_dir} not found. dataset_root must hold "
                f"leftImg8bit/{{train,val}}/CITY/*{_IMG_SUFFIX} and "
                f"gtFine/{{train,val}}/CITY/*{_LABEL_SUFFIX}.")
        images = sorted(glob.glob(os.path.join(img_dir, "*", "*" + _IMG_SUFFIX)))
        if not images:
            raise DatasetNotFoundError(f"Cityscapes: no *{_IMG_SUFFIX} files in "
                                       f"{img_dir}/CITY/")
        for img_path in images:
            city = os.path.basename(os.path.dirname(img_path))
            stem = os.path.basename(img_path)[:-len(_IMG_SUFFIX)]
            label_path = os.path.join(dataset_root, "gtFine", self.mode, city,
                                      stem + _LABEL_SUFFIX)
            if not os.path.isfile(label_path):
                if self.mode == "test":
                    label_path = None
                else:
                    raise DatasetError(self._missing_label_message(img_path, label_path))
            self.records.append(Record(img_path, label_path, None, img_path, stem))
        self.check_labels()

    def _missing_label_message(self, img_path: str, label_path: str) -> str:
        msg = f"Cityscapes: the label of {img_path} is missing: {label_path}."
        if os.path.isfile(label_path.replace("labelTrainIds", "labelIds")):
            msg += (" Only labelIds exist; derive the 19-class labelTrainIds with: python "
                    "tools/convert_dataset.py cityscapes SRC DST")
        return msg
