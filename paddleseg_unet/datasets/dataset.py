"""The generic list-file dataset and the sample pipeline every dataset shares.

Per-sample randomness
---------------------
A dataset never touches global random state. ``dataset[key]`` accepts

- ``(index, seed, draw)``, what the samplers of :mod:`paddleseg_unet.datasets.loader`
  yield: the transforms get ``sample_rng(seed, draw)``, a
  ``Generator(PCG64(SeedSequence([seed, draw])))``. ``draw`` is the sample's position in
  the sampler's global stream, unique over epochs and ranks, so an augmentation depends
  only on (seed, position), never on which worker process or how many of them ran it;
- a plain ``index``: the same as ``(index, 0, index)``, reproducible standalone access.

Modes
-----
- ``train``: image and label go through the transforms together; returns ``img``
  (CHW float32), ``label`` (HxW int64), optional ``edge`` (HxW uint8), ``name``, paths.
- ``val`` / ``test``: only the image goes through the transforms; the label (int64) and
  the field-of-view mask (uint8 0/1, retina sets) are attached afterwards at their
  ORIGINAL resolution, with ``trans_info`` telling how to map predictions back.

Decoded-image cache
-------------------
``cache_images=True`` keeps every sample's decoded arrays (image, label, fov) in memory
after its first read, so later epochs skip decoding (the transforms still run per draw).
Off by default: it costs about H*W*4 bytes per sample (DRIVE: 26 MB in all, Cityscapes
train: 25 GB) in EVERY data-loader worker process, each filling its own copy. Cached
arrays are read-only, since transforms must not modify their input; labels and masks are
handed out as copies. Files are not re-read, so edits to them during a run go unseen.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from paddleseg_unet.cvlibs.registry import DATASETS
from paddleseg_unet.datasets.image_io import (DatasetError, DatasetNotFoundError,
                                              check_label_values, check_same_size,
                                              read_image, read_label, read_mask)
from paddleseg_unet.datasets.label_check import check_label_sample
from paddleseg_unet.utils.visualize import voc_color_map

__all__ = ["SegDataset", "Dataset", "DatasetMeta", "Record", "sample_rng", "build_transforms",
           "dataset_meta", "MODES"]

MODES = ("train", "val", "test")
SampleKey = Union[int, Tuple[int, int, int]]
TransformsArg = Union[None, Callable, Sequence[Union[Dict[str, Any], Callable]]]


def sample_rng(seed: int, draw: int) -> np.random.Generator:
    """The generator a sample's transforms use: PCG64 seeded by SeedSequence([seed, draw])."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(draw)])))


def build_transforms(transforms: TransformsArg, where: str = "transforms") -> Callable:
    """A pipeline from a Compose/callable, or a list of transform specs and/or callables.

    ``None`` means no augmentation: the bare Compose, which only makes the CHW float32
    image.
    """
    from paddleseg_unet.transforms import Compose  # also registers every transform

    if transforms is None:
        return Compose([])
    if isinstance(transforms, (list, tuple)):
        return Compose(list(transforms))  # Compose builds spec dicts itself
    if callable(transforms):
        return transforms
    raise DatasetError(f"{where}: expected a list of transform specs or a callable, "
                       f"got {type(transforms).__name__}")


Color = Tuple[int, int, int]


@dataclass(frozen=True)
class DatasetMeta:
    """What a dataset says about its classes, for pictures, exports and result logs.

    ``class_names`` and ``palette`` cover every class (names ``class_i`` and the PASCAL VOC
    colours where the dataset defines none); ``foreground_class`` is the class scored as
    the object in a two-class task (vessel), else None; ``valid_region`` names the mask that
    bounds the scored region (``"fov"`` for the retina sets), else None.
    """

    class_names: Tuple[str, ...]
    palette: Tuple[Color, ...]
    foreground_class: Optional[int] = None
    valid_region: Optional[str] = None


def dataset_meta(section: Any, num_classes: int) -> DatasetMeta:
    """The metadata of a config's dataset section (``type`` plus optional ``class_names`` /
    ``palette``) without building the dataset (its files need not exist)."""
    section = section if isinstance(section, dict) else {}
    type_name = section.get("type")
    cls = DATASETS.get(type_name) if isinstance(type_name, str) and type_name in DATASETS \
        else SegDataset
    return cls.meta_for(num_classes, section.get("class_names"), section.get("palette"))


@dataclass(frozen=True)
class Record:
    """One sample on disk; ``where`` ("list.txt line 3") prefixes its error messages."""

    img_path: str
    label_path: Optional[str]
    fov_path: Optional[str]
    where: str
    name: str


def _edge_map(label: np.ndarray, num_classes: int, radius: int = 2) -> np.ndarray:
    """1 where a class boundary lies within ``radius`` pixels (PaddleSeg's edge target)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    edge = np.zeros(label.shape, np.uint8)
    for k in np.unique(label):
        if not 0 <= k < num_classes:
            continue
        mask = (label == k).astype(np.uint8)
        edge |= cv2.dilate(mask, kernel) ^ cv2.erode(mask, kernel)
    return edge


class SegDataset:
    """Base: a list of :class:`Record` and the shared load -> check -> transform pipeline.

    Subclasses fill ``self.records`` (see :class:`Dataset` for the list-file version).
    A map-style dataset for ``paddle.io.DataLoader`` (``__getitem__`` + ``__len__``); it
    does not subclass ``paddle.io.Dataset`` so that importing the datasets (e.g. by the
    converter CLI) does not import paddle.
    """

    NUM_CLASSES: Optional[int] = None
    # Metadata (see DatasetMeta); a subclass with fixed classes sets them.
    CLASS_NAMES: Tuple[str, ...] = ()
    PALETTE: Tuple[Color, ...] = ()
    FOREGROUND_CLASS: Optional[int] = None
    VALID_REGION: Optional[str] = None

    @classmethod
    def meta_for(cls, num_classes: int, class_names: Optional[Sequence[str]] = None,
                 palette: Optional[Sequence[Sequence[int]]] = None) -> DatasetMeta:
        """Metadata for ``num_classes`` classes: the given names/colours, else the class's
        own, completed with ``class_i`` and the VOC colours."""
        names = list(class_names if class_names is not None else cls.CLASS_NAMES)
        colors = [tuple(int(v) for v in c) for c in
                  (palette if palette is not None else cls.PALETTE)]
        for what, given in (("class_names", names), ("palette", colors)):
            if len(given) > num_classes:
                raise DatasetError(f"{cls.__name__}: {what} has {len(given)} entries for "
                                   f"{num_classes} classes")
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colors):
            raise DatasetError(f"{cls.__name__}: palette entries must be [R, G, B] in 0..255, "
                               f"got {palette!r}")
        names += [f"class_{i}" for i in range(len(names), num_classes)]
        voc = voc_color_map(num_classes)
        colors += [tuple(int(v) for v in voc[i]) for i in range(len(colors), num_classes)]
        foreground = cls.FOREGROUND_CLASS
        if foreground is None and num_classes == 2:
            foreground = 1  # a two-class task scores class 1 as the object
        return DatasetMeta(tuple(str(n) for n in names), tuple(colors), foreground,  # type: ignore[arg-type]
                           cls.VALID_REGION)

    @property
    def meta(self) -> DatasetMeta:
        return self.meta_for(self.num_classes, self.class_names, self.palette)

    def __init__(self, transforms: TransformsArg, num_classes: int, mode: str = "train",
                 ignore_index: int = 255, edge: bool = False,
                 cache_images: bool = False, class_names: Optional[Sequence[str]] = None,
                 palette: Optional[Sequence[Sequence[int]]] = None) -> None:
        mode = str(mode).lower()
        if mode not in MODES:
            raise DatasetError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise DatasetError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.mode = mode
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.palette = [list(c) for c in palette] if palette is not None else None
        self.meta_for(num_classes, self.class_names, self.palette)  # refuse bad ones now
        self.ignore_index = int(ignore_index)
        self.edge = bool(edge)
        self.cache_images = bool(cache_images)
        self._cache: Dict[int, Dict[str, Any]] = {}
        self.transforms = build_transforms(transforms)
        self.records: List[Record] = []

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, samples={len(self)}, "
                f"num_classes={self.num_classes})")

    def check_labels(self) -> None:
        """Build-time check of a sample of the labels (modes train/val), see
        :mod:`paddleseg_unet.datasets.label_check`; subclasses call it once their
        records are filled."""
        if self.mode != "test":
            check_label_sample(self.records, self.num_classes, self.ignore_index, self.mode,
                               getattr(self, "dataset_root", None))

    # -- reading ---------------------------------------------------------------------
    def load(self, index: int, with_fov: bool = True) -> Dict[str, Any]:
        """The raw sample of ``records[index]`` (uint8 HxWx3 image, original label/fov;
        the fov mask only ``with_fov``: training does not use it)."""
        record = self.records[index]
        try:
            img = read_image(record.img_path)
            sample: Dict[str, Any] = {"img": img, "img_path": record.img_path,
                                      "name": record.name}
            if record.label_path is not None:
                label = read_label(record.label_path)
                check_same_size(img, label, record.img_path, record.label_path)
                check_label_values(label, self.num_classes, self.ignore_index,
                                   record.label_path)
                sample["label"] = label
                sample["label_path"] = record.label_path
            if with_fov and record.fov_path is not None:
                fov = read_mask(record.fov_path)
                check_same_size(img, fov, record.img_path, record.fov_path, what="FOV mask")
                sample["fov"] = fov
        except DatasetError as e:
            raise type(e)(f"{record.where}: {e}") from None
        return sample

    def _raw(self, index: int) -> Dict[str, Any]:
        """``load`` for the current mode, through the decoded-image cache if enabled."""
        with_fov = self.mode != "train"
        if not self.cache_images:
            return self.load(index, with_fov)
        index %= len(self)
        cached = self._cache.get(index)
        if cached is None:
            cached = self.load(index, with_fov)
            for value in cached.values():
                if isinstance(value, np.ndarray):
                    value.flags.writeable = False
            self._cache[index] = cached
        return dict(cached)

    def __getitem__(self, key: SampleKey) -> Dict[str, Any]:
        if isinstance(key, (tuple, list)):
            index, seed, draw = (int(v) for v in key)
        else:
            index, seed, draw = int(key), 0, int(key)
        if not -len(self) <= index < len(self):
            raise IndexError(f"{type(self).__name__} index {index} out of range "
                             f"(0..{len(self) - 1})")
        sample = self._raw(index)
        rng = sample_rng(seed, draw)
        if self.mode == "train":
            if "label" not in sample:
                raise DatasetError(f"{self.records[index].where}: mode 'train' needs a label")
            sample.pop("fov", None)  # not used by training (not even read); saves work
            sample["trans_info"] = []
            sample = self.transforms(sample, rng)
            label = np.asarray(sample["label"])
            # A cached label that no transform replaced must not leave the dataset.
            sample["label"] = label.astype(np.int64, copy=not label.flags.writeable)
            if self.edge:
                sample["edge"] = _edge_map(sample["label"], self.num_classes)
            return sample
        # val/test: evaluation happens at the original resolution, so the label and fov
        # bypass the (possibly resizing) transforms.
        kept = {k: sample.pop(k) for k in ("label", "fov") if k in sample}
        sample["trans_info"] = []
        sample = self.transforms(sample, rng)
        if "label" in kept:
            sample["label"] = kept["label"].astype(np.int64)
        if "fov" in kept:
            sample["fov"] = kept["fov"] if kept["fov"].flags.writeable else kept["fov"].copy()
        return sample


def _resolve_list_file(path: str, dataset_root: str, arg: str) -> str:
    """A list file named as given (absolute or relative to the working directory, like
    PaddleSeg), else relative to ``dataset_root``."""
    candidates = [path]
    if not os.path.isabs(path):
        candidates.append(os.path.join(dataset_root, path))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise DatasetNotFoundError(
        f"{arg} list file not found: {path}"
        + (f" (also tried {candidates[1]})" if len(candidates) > 1 else "")
        + ". Each line must be 'image label', paths relative to dataset_root.")


@DATASETS.register()
class Dataset(SegDataset):
    """A dataset described by list files, PaddleSeg's generic ``Dataset``.

    Each line of the list file is ``image<separator>label`` with paths relative to
    ``dataset_root`` (in mode 'test' the label may be omitted). Blank lines are skipped.
    Missing files are reported at construction, naming the list file and line, and a
    sample of the labels is checked (0/255 masks, mostly-ignore labels: an error).
    ``cache_images=True`` keeps decoded samples in memory (off by default; see the
    module doc for the memory cost). ``class_names`` and ``palette`` (``[R, G, B]`` per
    class) name and colour the classes in pictures, exports and logs.
    """

    def __init__(self, dataset_root: str, transforms: TransformsArg, num_classes: int,
                 mode: str = "train", train_path: Optional[str] = None,
                 val_path: Optional[str] = None, test_path: Optional[str] = None,
                 separator: str = " ", ignore_index: int = 255, edge: bool = False,
                 cache_images: bool = False, class_names: Optional[Sequence[str]] = None,
                 palette: Optional[Sequence[Sequence[int]]] = None) -> None:
        super().__init__(transforms, num_classes, mode, ignore_index, edge, cache_images,
                         class_names, palette)
        if dataset_root is None or not os.path.isdir(dataset_root):
            raise DatasetNotFoundError(f"dataset_root is not a directory: {dataset_root}")
        self.dataset_root = dataset_root
        self.separator = separator
        list_arg = {"train": ("train_path", train_path), "val": ("val_path", val_path),
                    "test": ("test_path", test_path)}[self.mode]
        if list_arg[1] is None:
            raise DatasetError(f"mode {self.mode!r} needs {list_arg[0]} (a list file of "
                               "'image label' lines), but it is not set")
        self.list_path = _resolve_list_file(list_arg[1], dataset_root, list_arg[0])
        self.records = self._parse_list(self.list_path)
        self.check_labels()

    def _split_line(self, line: str) -> List[str]:
        if self.separator.strip() == "":
            return line.split()
        return [field.strip() for field in line.split(self.separator)]

    def _parse_list(self, list_path: str) -> List[Record]:
        records = []
        allowed = (1, 2) if self.mode == "test" else (2,)
        try:
            with open(list_path, "r", encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"List file cannot be read: {list_path} ({e})") from e
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{list_path} line {number}"
            fields = self._split_line(line.strip())
            if len(fields) not in allowed:
                expected = "'image' or 'image label'" if self.mode == "test" else "'image label'"
                raise DatasetError(
                    f"{where}: expected {expected} separated by {self.separator!r}, got "
                    f"{len(fields)} field(s): {line.strip()!r}")
            img_path = os.path.join(self.dataset_root, fields[0])
            label_path = os.path.join(self.dataset_root, fields[1]) if len(fields) == 2 else None
            for what, path in (("image", img_path), ("label", label_path)):
                if path is not None and not os.path.isfile(path):
                    raise DatasetError(f"{where}: {what} not found: {path}")
            records.append(Record(img_path, label_path, self._fov_path(fields[0]), where,
                                  os.path.splitext(os.path.basename(fields[0]))[0]))
        if not records:
            raise DatasetError(f"List file has no entries: {list_path}")
        return records

    def _fov_path(self, img_rel: str) -> Optional[str]:
        """The field-of-view mask of an image, if the dataset has one (retina sets)."""
        return None
