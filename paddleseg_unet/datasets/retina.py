"""Retinal-vessel datasets: DRIVE, STARE, CHASEDB1, HRF (2 classes: background, vessel).

A dataset root is any folder with ``train_list.txt`` and ``val_list.txt`` (optionally
``test_list.txt``) whose lines are ``image label`` relative to the root. Two layouts
have that:

- ours, written by ``tools/convert_dataset.py``: ``images/{train,val}/NAME.png``,
  ``annotations/{train,val}/NAME.png`` (0/1) and ``fov/{train,val}/NAME.png`` (0/1);
- PaddleSeg's prepared zips (same list format, no FOV masks).

The field-of-view mask of ``images/<split>/NAME.ext`` is ``fov/<split>/NAME.png`` when
that file exists; in val/test mode it is returned as ``sample['fov']``.

A missing root is downloaded (PaddleSeg's prepared zip) only when ``download=True``.
Mode 'test' reads ``test_list.txt`` when present, else ``val_list.txt``.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

from paddleseg_unet.cvlibs.registry import DATASETS
from paddleseg_unet.datasets.dataset import Dataset, TransformsArg
from paddleseg_unet.datasets.image_io import DatasetError, DatasetNotFoundError
from paddleseg_unet.utils.download import (DownloadError, cache_root, cached_download,
                                           extract_archive)

__all__ = ["RetinaDataset", "DRIVE", "STARE", "CHASEDB1", "HRF", "default_data_home",
           "install_dir", "is_prepared_root"]

_LISTS = {"train": ("train_list.txt",), "val": ("val_list.txt",),
          "test": ("test_list.txt", "val_list.txt")}


def default_data_home() -> str:
    """``$PADDLESEG_UNET_HOME/datasets`` (default ``~/.paddleseg_unet/datasets``)."""
    return os.path.join(cache_root(), "datasets")


def is_prepared_root(path: str) -> bool:
    """True when ``path`` holds the list files of a prepared/converted dataset."""
    return all(os.path.isfile(os.path.join(path, name))
               for name in ("train_list.txt", "val_list.txt"))


def install_dir(staging: str, root: str) -> None:
    """Rename a complete ``staging`` folder to ``root``, atomically.

    An empty ``root`` placeholder is replaced; when another process installed ``root``
    first (the rename fails and ``root`` is a prepared root), its copy is kept and the
    caller discards ``staging``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    try:
        os.rmdir(root)  # only succeeds for an empty placeholder folder
    except OSError:
        pass
    try:
        os.rename(staging, root)
    except OSError:
        if not is_prepared_root(root):  # not a lost race: a real failure
            raise


def _find_prepared_root(top: str, max_depth: int = 2) -> Optional[str]:
    """The shallowest folder under ``top`` holding the list files (zips nest a folder)."""
    level = [top]
    for _ in range(max_depth + 1):
        for path in level:
            if is_prepared_root(path):
                return path
        level = [os.path.join(p, d) for p in level for d in sorted(os.listdir(p))
                 if os.path.isdir(os.path.join(p, d))]
    return None


class RetinaDataset(Dataset):
    """Base of the retina datasets; subclasses set the class attributes below.

    ``cache_images`` is on by default here: these sets hold 20-45 images that training reads
    thousands of times, and decoding the PNGs is most of a sample's cost (see
    benchmarks/data_pipeline.py). Each loader worker keeps its own copy (DRIVE ~26 MB,
    HRF train ~370 MB); pass ``cache_images: False`` to decode on every read.
    """

    NUM_CLASSES = 2
    CLASS_NAMES = ("background", "vessel")
    PALETTE = ((0, 0, 0), (0, 255, 0))  # pure green stands out on the red fundus
    FOREGROUND_CLASS = 1
    VALID_REGION = "fov"
    URL: Optional[str] = None  # PaddleSeg's prepared zip
    DIRNAME = ""  # folder name under default_data_home() when dataset_root is None
    CONVERTER = ""  # dataset name for tools/convert_dataset.py

    def __init__(self, dataset_root: Optional[str] = None, transforms: TransformsArg = None,
                 mode: str = "train", download: bool = False, edge: bool = False,
                 cache_images: bool = True) -> None:
        root = self._prepare_root(dataset_root, download)
        mode = str(mode).lower()
        list_path = None
        for name in _LISTS.get(mode, ("train_list.txt",)):
            list_path = os.path.join(root, name)
            if os.path.isfile(list_path):
                break
        super().__init__(dataset_root=root, transforms=transforms,
                         num_classes=self.NUM_CLASSES, mode=mode, train_path=list_path,
                         val_path=list_path, test_path=list_path, edge=edge,
                         cache_images=cache_images)

    # -- locating / downloading the root -----------------------------------------------
    def _prepare_root(self, dataset_root: Optional[str], download: bool) -> str:
        root = dataset_root or os.path.join(default_data_home(), self.DIRNAME)
        if is_prepared_root(root):
            return root
        if download and self.URL:
            return self._download(root)
        raise DatasetNotFoundError(self._missing_message(root))

    def _missing_message(self, root: str) -> str:
        name = type(self).__name__
        state = ("exists but has no train_list.txt/val_list.txt" if os.path.isdir(root)
                 else "does not exist")
        msg = f"{name} dataset root {root} {state}. "
        if self.URL:
            msg += (f"To fetch PaddleSeg's prepared {name} ({self.URL}), pass download=True "
                    f"(in a config: --opts train_dataset.download=True "
                    f"val_dataset.download=True); or convert")
        else:
            msg += "Convert"
        return (msg + f" the official distribution: python tools/convert_dataset.py "
                f"{self.CONVERTER} SRC {root}")

    def _download(self, root: str) -> str:
        try:
            archive = cached_download(self.URL, subdir="datasets")
            staging = extract_archive(archive, f"{root}.extract-{os.getpid()}")
        except DownloadError as e:
            raise DatasetNotFoundError(f"{type(self).__name__}: {e}") from None
        try:
            found = _find_prepared_root(staging)
            if found is None:
                raise DatasetError(
                    f"The archive {archive} (from {self.URL}) holds no train_list.txt/"
                    f"val_list.txt; delete it and retry, or convert the official "
                    f"distribution with tools/convert_dataset.py {self.CONVERTER}.")
            install_dir(found, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return root

    # -- FOV masks of the converted layout ------------------------------------------
    def _fov_path(self, img_rel: str) -> Optional[str]:
        parts = img_rel.replace("\\", "/").split("/")
        if len(parts) < 2 or parts[0] != "images":
            return None
        stem = os.path.splitext(parts[-1])[0]
        path = os.path.join(self.dataset_root, "fov", *parts[1:-1], stem + ".png")
        return path if os.path.isfile(path) else None


_PADDLESEG_DATA = "https://bj.bcebos.com/paddleseg/dataset/"


def _retina_dataset(name: str, archive: str, dirname: str, converter: str, doc: str) -> type:
    """Define and register one retina dataset class (they differ only in these facts)."""
    cls = type(name, (RetinaDataset,), {
        "__doc__": doc, "__module__": __name__, "URL": _PADDLESEG_DATA + archive,
        "DIRNAME": dirname, "CONVERTER": converter})
    return DATASETS.register()(cls)


DRIVE = _retina_dataset("DRIVE", "drive/drive.zip", "DRIVE", "drive",
                        "DRIVE: 40 fundus images 565x584 (20 train / 20 test).")
STARE = _retina_dataset("STARE", "stare/stare.zip", "STARE", "stare",
                        "STARE: 20 fundus images 700x605, Hoover's labels.")
CHASEDB1 = _retina_dataset("CHASEDB1", "chase_db1/chase_db1.zip", "CHASE_DB1", "chasedb1",
                           "CHASE DB1: 28 fundus images 999x960, first observer's labels.")
HRF = _retina_dataset("HRF", "hrf/hrf.zip", "HRF", "hrf",
                      "HRF: 45 high-resolution fundus images 3504x2336.")
