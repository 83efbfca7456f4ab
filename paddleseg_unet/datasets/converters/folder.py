"""Your own data: a folder of images and a folder of masks.

Images and masks are paired by file stem (a mask may carry a suffix, ``--mask_suffix``);
``train/`` and ``val/`` subfolders (in both folders) are an existing split, else the pairs
are split by ``val_fraction`` (seeded) or by a ``val_list`` of names. Every mask is read
and checked before anything is written; the mask format is decided over the whole set:

- class indices 0..K-1 (also palette PNGs, whose palette indices are the classes), 255 and
  ``ignore_value`` kept as 255 (ignore);
- binary 0/255 (255 -> class 1) and 0/1;
- JPEG-saved binary masks (values near 0 and 255): thresholded at 128, with a warning
  counting the pixels that changed; lossless masks with such in-between values (blurred
  edges) and grey-level images are refused, not guessed at;
- RGB colour masks, with a colour table (``colors``, JSON or YAML)::

      classes:                    # class id = position in the list
        - {name: background, color: [0, 0, 0]}
        - {name: road, color: [128, 64, 128]}
      ignore: [[255, 255, 255]]   # optional: colours written as 255 (ignore)

Writes ``DST/images/{train,val}/NAME.ext`` (PNG, JPEG, BMP and TIFF copied byte for byte,
others as PNG), ``DST/annotations/{train,val}/NAME.png`` (class indices, 255 = ignore),
``DST/{train,val}_list.txt``, ``DST/summary.txt`` and a config ``DST/unet_<name>.yml``
that trains as is (the generic ``Dataset`` type, the reference recipe, a crop size
suited to the image size). See docs/custom_data.md.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from paddleseg_unet.datasets.image_io import DatasetError, read_image, read_label

from paddleseg_unet.cvlibs.registry import CONVERTERS
from .common import (SPLITS, ConversionError, ConversionSummary, PathLike, check_destination,
                     decode_image, staging, write_bytes, write_lists, write_png)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
_COPIED = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # what training reads as is
_JPEG = (".jpg", ".jpeg")
IGNORE = 255
# JPEG masks: values within _NEAR of 0 or 255 count as "near binary"; a set whose pixels
# are at least _NEAR_SHARE near binary is thresholded, anything else refused.
_NEAR = 32
_NEAR_SHARE = 0.95
_MAX_LISTED = 5
# More distinct values than this: grey-level images, not class masks (ADE20K has 150).
_MAX_DISTINCT = 200
# Reference recipes (configs/unet/*.yml) the generated config follows.
_BINARY_RECIPE = "configs/unet/unet_drive_128x128_40k.yml"
_MULTI_RECIPE = "configs/unet/unet_cityscapes_1024x512_160k.yml"


def default_name(dst: PathLike) -> str:
    """The dataset name a DST folder gives when ``--name`` is not passed."""
    name = re.sub(r"[^0-9a-z]+", "_", Path(os.path.abspath(dst)).name.lower()).strip("_")
    return name or "custom"


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


# ------------------------------------------------------------------------ colour table

@dataclass(frozen=True)
class ColorTable:
    """Colour (packed 0xRRGGBB) -> class id (IGNORE for ignore colours), names, colours."""

    ids: Dict[int, int]
    names: List[str]
    colors: List[List[int]]


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _color(value, where: str) -> List[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * 3  # a grey level
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in value)):
        raise ConversionError(f"{where}: a colour must be [R, G, B] (0..255) or a grey "
                              f"level, got {value!r}")
    return [int(c) for c in value]


def load_color_table(path: PathLike) -> ColorTable:
    """Read a colour table (JSON or YAML, format in the module doc)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = (json.loads(text) if str(path).lower().endswith(".json")
                else yaml.safe_load(text))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read the colour table {path}: {exc}") from exc
    except (ValueError, yaml.YAMLError) as exc:
        raise ConversionError(f"{path}: not valid JSON/YAML: {' '.join(str(exc).split())}") \
            from exc
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or len(classes) < 2:
        raise ConversionError(f"{path}: expected 'classes:', a list of at least 2 entries "
                              f"{{name: ..., color: [R, G, B]}} (class id = position)")
    ids: Dict[int, int] = {}
    names, colors = [], []
    for i, entry in enumerate(classes):
        where = f"{path}: classes[{i}]"
        if not isinstance(entry, dict) or "color" not in entry:
            raise ConversionError(f"{where}: expected {{name: ..., color: [R, G, B]}}, "
                                  f"got {entry!r}")
        rgb = _color(entry["color"], where)
        key = int(_pack(np.array(rgb)))
        if key in ids:
            raise ConversionError(f"{where}: colour {rgb} is also class {ids[key]}")
        ids[key] = i
        names.append(str(entry.get("name", f"class_{i}")))
        colors.append(rgb)
    for j, value in enumerate(data.get("ignore") or []):
        rgb = _color(value, f"{path}: ignore[{j}]")
        key = int(_pack(np.array(rgb)))
        if key in ids:
            raise ConversionError(f"{path}: ignore[{j}] colour {rgb} is also class {ids[key]}")
        ids[key] = IGNORE
    return ColorTable(ids, names, colors)


# ------------------------------------------------------------------------ pairing

@dataclass(frozen=True)
class Pair:
    name: str
    split: Optional[str]  # from train/ val/ subfolders, else None (split later)
    image: Path
    mask: Path


@dataclass
class Pairing:
    pairs: List[Pair] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    presplit: bool = False


def _files(folder: Path, what: str, skipped: List[str]) -> Dict[str, Path]:
    """Image files of ``folder`` (not recursive) by stem."""
    found: Dict[str, Path] = {}
    others = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if path.name not in SPLITS:
                skipped.append(f"{what} subfolder {path} (only train/ and val/ are read)")
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            others.append(path.name)
            continue
        if path.stem in found:
            raise ConversionError(f"{found[path.stem]} and {path} have the same name; keep "
                                  f"one of them")
        found[path.stem] = path
    if others:
        skipped.append(f"{len(others)} {what} file(s) that are not images ({_listed(others)})")
    return found


def pair_files(images: PathLike, masks: PathLike, mask_suffix: str = "") -> Pairing:
    """Pair images and masks by stem (mask stem = image stem + ``mask_suffix``)."""
    images, masks = Path(images), Path(masks)
    for folder, flag in ((images, "--images"), (masks, "--masks")):
        if not folder.is_dir():
            raise ConversionError(f"{flag} {folder} is not a folder")
    result = Pairing()
    presplit = all((images / s).is_dir() for s in SPLITS)
    if presplit and not all((masks / s).is_dir() for s in SPLITS):
        raise ConversionError(f"{images} has train/ and val/ subfolders but {masks} does not; "
                              f"split both the same way, or neither")
    result.presplit = presplit
    groups = [(s, images / s, masks / s) for s in SPLITS] if presplit else [(None, images, masks)]
    if presplit:
        top = [p.name for p in images.iterdir() if p.is_file()
               and p.suffix.lower() in IMAGE_SUFFIXES]
        if top:
            result.skipped.append(f"{len(top)} image(s) beside train/ and val/ in {images} "
                                  f"({_listed(sorted(top))})")
    unmatched_images: List[str] = []
    unmatched_masks: List[str] = []
    for split, image_dir, mask_dir in groups:
        image_files = _files(image_dir, "image", result.skipped)
        mask_files: Dict[str, Path] = {}
        for stem, path in _files(mask_dir, "mask", result.skipped).items():
            if mask_suffix and not stem.endswith(mask_suffix):
                unmatched_masks.append(f"{path.name} (no suffix {mask_suffix})")
                continue
            mask_files[stem[:len(stem) - len(mask_suffix)] if mask_suffix else stem] = path
        for name in sorted(image_files):
            if name in mask_files:
                result.pairs.append(Pair(name, split, image_files[name], mask_files[name]))
            else:
                unmatched_images.append(image_files[name].name)
        unmatched_masks += [mask_files[n].name for n in sorted(set(mask_files) - set(image_files))]
    if unmatched_images:
        result.skipped.append(f"{len(unmatched_images)} image(s) without a mask: "
                              f"{_listed(unmatched_images)}")
    if unmatched_masks:
        result.skipped.append(f"{len(unmatched_masks)} mask(s) without an image: "
                              f"{_listed(unmatched_masks)}")
    if not result.pairs:
        hint = ""
        if unmatched_images and unmatched_masks and not mask_suffix:
            image_stem = Path(unmatched_images[0]).stem
            mask_stem = Path(unmatched_masks[0]).stem
            if mask_stem.startswith(image_stem) and mask_stem != image_stem:
                hint = f"; the masks seem to be named NAME{mask_stem[len(image_stem):]}: " \
                       f"pass --mask_suffix {mask_stem[len(image_stem):]}"
        raise ConversionError(
            f"no image in {images} has a mask in {masks} with the same name (images e.g. "
            f"{_listed(unmatched_images) or 'none'}; masks e.g. "
            f"{_listed(unmatched_masks) or 'none'}){hint}")
    return result


def assign_splits(pairs: Sequence[Pair], val_fraction: Optional[float] = None, seed: int = 0,
                  val_list: Optional[PathLike] = None) -> List[Pair]:
    """Pairs with their split: from a ``val_list`` file, or a seeded random
    ``val_fraction`` (default 0.2) of them, at least one in each split."""
    if val_list is not None:
        try:
            lines = Path(val_list).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConversionError(f"cannot read --val_list {val_list}: {exc}") from exc
        wanted = {}
        for number, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if line:
                wanted[Path(line.replace("\\", "/")).stem] = number
        names = {p.name for p in pairs}
        unknown = [f"{n} (line {i})" for n, i in wanted.items() if n not in names]
        if unknown:
            raise ConversionError(f"--val_list {val_list}: no image/mask pair named "
                                  f"{_listed(unknown)}")
        val = set(wanted)
    else:
        fraction = 0.2 if val_fraction is None else float(val_fraction)
        if not 0 < fraction < 1:
            raise ConversionError(f"--val_fraction must be between 0 and 1, got {fraction}")
        if len(pairs) < 2:
            raise ConversionError(f"only {len(pairs)} image/mask pair: a train and a val split "
                                  f"need at least 2")
        names = sorted(p.name for p in pairs)
        n_val = min(len(names) - 1, max(1, round(fraction * len(names))))
        order = np.random.default_rng(seed).permutation(len(names))
        val = {names[i] for i in order[:n_val]}
    result = [Pair(p.name, "val" if p.name in val else "train", p.image, p.mask) for p in pairs]
    if not any(p.split == "train" for p in result):
        raise ConversionError(f"--val_list {val_list} names every pair; leave some for training")
    return result


# ------------------------------------------------------------------------ masks

@dataclass
class MaskFormat:
    """How stored mask values become class indices: a 256-entry lookup table."""

    description: str
    lut: np.ndarray  # uint8[256]
    names: List[str]
    colors: Optional[ColorTable] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.names)


def _file_format(path: Path) -> Tuple[str, str]:
    """(Pillow format, mode) of an image file, from its header only."""
    try:
        with Image.open(path) as im:
            return im.format or "", im.mode
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc


def _read_grey_mask(path: Path) -> np.ndarray:
    """A mask's stored values (palette PNG: indices) as HxW; JPEG 'grey as RGB' averaged."""
    try:
        mask = read_label(str(path))
    except DatasetError as exc:  # read_label refuses colour labels with this wording
        if "colour image" in str(exc) and _file_format(path)[0] == "JPEG":
            return read_image(str(path)).mean(axis=2).round().astype(np.uint8)
        if "colour image" in str(exc):
            raise ConversionError(f"mask {path} is a colour image; pass --colors FILE, a "
                                  f"colour table mapping each colour to a class (see "
                                  f"docs/custom_data.md)") from None
        raise ConversionError(str(exc)) from None
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise ConversionError(f"mask {path} has values {int(mask.min())}..{int(mask.max())};"
                                  f" class indices must be 0..254 (255 = ignore)")
        mask = mask.astype(np.uint8)
    return mask


def _read_color_mask(path: Path, table: ColorTable) -> Tuple[np.ndarray, Dict[int, int]]:
    """Class indices of an RGB mask, and its unknown colours (packed -> pixel count)."""
    try:
        rgb = read_image(str(path))
    except DatasetError as exc:
        raise ConversionError(str(exc)) from None
    codes, inverse, counts = np.unique(_pack(rgb), return_inverse=True, return_counts=True)
    mapped = np.array([table.ids.get(int(c), -1) for c in codes])
    unknown = {int(c): int(n) for c, n, m in zip(codes, counts, mapped) if m < 0}
    return mapped.clip(0).astype(np.uint8)[inverse.reshape(rgb.shape[:2])], unknown


def _format_color(code: int) -> str:
    return f"[{code >> 16}, {(code >> 8) & 255}, {code & 255}]"


def decide_format(hist: np.ndarray, n_jpeg: int, n_palette: int,
                  ignore_value: Optional[int], n_masks: int) -> MaskFormat:
    """The mask format of a set whose summed 256-bin value histogram is ``hist``, with
    ``n_jpeg`` JPEG and ``n_palette`` palette-PNG files among its ``n_masks``."""
    any_jpeg = n_jpeg > 0
    lut = np.full(256, IGNORE, np.uint8)
    explicit = {ignore_value} if ignore_value is not None else set()
    present = {int(v) for v in np.flatnonzero(hist)} - explicit
    binary_names = ["background", "foreground"]
    ignore_note = f", value {ignore_value} kept as ignore (255)" if explicit else ""
    if present <= {0, 255} and 255 in present:
        lut[0], lut[255] = 0, 1
        return MaskFormat(f"binary 0/255 (255 -> class 1){ignore_note}", lut, binary_names)
    if present <= {0, 1} and 1 in present:
        lut[:2] = (0, 1)
        return MaskFormat(f"binary 0/1{ignore_note}", lut, binary_names)
    core = sum(int(hist[v]) for v in present)
    near = sum(int(hist[v]) for v in present if v <= _NEAR or v >= 255 - _NEAR)
    mid = sum(int(hist[v]) for v in present if _NEAR < v < 255 - _NEAR)
    near_binary = (near >= _NEAR_SHARE * core and bool(present & set(range(_NEAR + 1)))
                   and bool(present & set(range(255 - _NEAR, 256))))
    if any_jpeg:
        if not near_binary:
            raise ConversionError(
                f"the masks include JPEG files and their values are not near 0/255 ("
                f"{near / core:.0%} of the pixels are); JPEG is lossy and alters class "
                f"indices: save the masks as PNG")
        lut[:128], lut[128:] = 0, 1
        for v in explicit:
            lut[v] = IGNORE
        changed = core - int(hist[0]) - int(hist[255])
        warnings = []
        if changed:
            warnings.append(f"{changed} pixels ({changed / max(int(hist.sum()), 1):.2%} of all "
                            f"mask pixels) of the {n_jpeg} JPEG masks were neither 0 nor 255 "
                            f"(JPEG compression) and were thresholded at 128; save masks as "
                            f"PNG to keep them exact")
        return MaskFormat(f"JPEG near-binary 0/255 (thresholded at 128){ignore_note}", lut,
                          binary_names, warnings=warnings)
    if near_binary and mid:
        # Lossless masks with in-between values: blurred edges (resized with interpolation,
        # anti-aliased drawing). Guessing a threshold could erase small classes: refuse.
        raise ConversionError(
            f"the masks look like binary 0/255 masks with blurred edges: {mid} pixels "
            f"({mid / core:.2%}) hold values between {_NEAR + 1} and {254 - _NEAR}, which are "
            f"not class indices; re-save them thresholded (or resized with nearest-neighbour "
            f"interpolation)")
    if len(present) > _MAX_DISTINCT:
        raise ConversionError(
            f"the masks hold {len(present)} distinct values: they look like grey-level "
            f"images, not class masks (which hold one value per class); check --masks, or "
            f"re-save the masks without interpolation")
    classes = present - {IGNORE}
    if not classes or max(classes) < 1:
        also = " and the ignore value" if IGNORE in present or explicit else ""
        raise ConversionError(f"the masks hold only class 0{also}: there is nothing to "
                              f"learn; check the masks (and --ignore_value)")
    num_classes = max(classes) + 1
    lut[:num_classes] = np.arange(num_classes)
    for v in explicit:
        lut[v] = IGNORE
    kind = "palette PNG indices" if n_palette == n_masks else "class indices"
    kept = ", 255 kept as ignore" if IGNORE in present else ""
    fmt = MaskFormat(f"{kind} 0..{num_classes - 1}{kept}{ignore_note}", lut,
                     [f"class_{i}" for i in range(num_classes)])
    if num_classes > 32 and len(classes) < num_classes / 2:
        fmt.warnings.append(f"the masks hold only {len(classes)} distinct values up to "
                            f"{num_classes - 1}: if they are grey levels standing for classes, "
                            f"pass --colors with those grey levels")
    return fmt


def scan_masks(pairs: Sequence[Pair], colors: Optional[ColorTable],
               ignore_value: Optional[int]) -> MaskFormat:
    """Read every mask (and its image's size) once; refuse bad ones; decide the format."""
    hist = np.zeros(256, np.int64)
    unknown: Dict[int, Tuple[int, str]] = {}  # colour -> (pixels, first file)
    for pair in tqdm(pairs, desc="checking masks", unit="mask", disable=None, leave=False):
        try:
            with Image.open(pair.image) as im:  # the header is enough for the size
                width, height = im.size
        except (OSError, ValueError) as exc:
            raise ConversionError(f"cannot read image {pair.image}: {exc}") from exc
        if colors is not None:
            mask, bad = _read_color_mask(pair.mask, colors)
            for code, n in bad.items():
                pixels, first = unknown.get(code, (0, str(pair.mask)))
                unknown[code] = (pixels + n, first)
        else:
            mask = _read_grey_mask(pair.mask)
            hist += np.bincount(mask.ravel(), minlength=256)
        if mask.shape != (height, width):
            raise ConversionError(f"mask {pair.mask} is {mask.shape[1]}x{mask.shape[0]} but its "
                                  f"image {pair.image} is {width}x{height}; masks must match "
                                  f"their images")
    if colors is not None:
        if unknown:
            worst = sorted(unknown.items(), key=lambda kv: -kv[1][0])
            shown = [f"{_format_color(c)} ({n} px, e.g. {Path(f).name})" for c, (n, f) in worst]
            raise ConversionError(f"{len(unknown)} mask colour(s) are not in the colour table: "
                                  f"{_listed(shown)}; add them to the table (as a class or "
                                  f"under ignore:)")
        lut = np.arange(256, dtype=np.uint8)  # colour masks are mapped on reading
        return MaskFormat(f"RGB colours ({len(colors.names)} classes from the colour table)",
                          lut, list(colors.names), colors)
    formats = [_file_format(p.mask) for p in pairs]
    n_jpeg = sum(kind == "JPEG" for kind, _ in formats)
    n_palette = sum(kind == "PNG" and mode == "P" for kind, mode in formats)
    return decide_format(hist, n_jpeg, n_palette, ignore_value, len(pairs))


def read_class_mask(path: Path, fmt: MaskFormat) -> np.ndarray:
    """A mask as class indices (uint8, 255 = ignore) in the decided format."""
    if fmt.colors is not None:
        return _read_color_mask(path, fmt.colors)[0]
    return fmt.lut[_read_grey_mask(path)]


# ------------------------------------------------------------------------ config

def crop_size_for(min_side: int) -> int:
    """A square training crop for images whose shorter side is ``min_side``: about a
    quarter of it as a power of two (DRIVE 565 -> 128, the reference), 64..512, and
    never above the image (a multiple of 16, the UNet's stride)."""
    crop = 2 ** int(np.floor(np.log2(max(min_side, 1) / 4))) if min_side >= 4 else 16
    return int(min(max(crop, 64), 512, max(16, min_side // 16 * 16)))


def build_config(dst: Path, fmt: MaskFormat, crop: int, long_side: int) -> Dict:
    binary = fmt.num_classes == 2
    train_transforms = [
        {"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 2.0,
         "scale_step_size": 0.25},
        {"type": "RandomPaddingCrop", "crop_size": [crop, crop]},
        {"type": "RandomHorizontalFlip"},
    ] + ([{"type": "RandomVerticalFlip"}] if binary else []) + [
        {"type": "RandomDistort", "brightness_range": 0.4, "contrast_range": 0.4,
         "saturation_range": 0.4},
        {"type": "Normalize"},
    ]
    # Very large images are evaluated at a long side of 1280, as configs/_base_/hrf.yml does.
    val_transforms = ([{"type": "ResizeByLong", "long_size": 1280}] if long_side > 2048
                      else []) + [{"type": "Normalize"}]
    root = str(dst)

    def dataset(mode: str, transforms: List[Dict]) -> Dict:
        section = {"type": "Dataset", "dataset_root": root,
                   f"{mode}_path": str(dst / f"{mode}_list.txt"),
                   "num_classes": fmt.num_classes, "ignore_index": IGNORE,
                   "transforms": transforms, "mode": mode,
                   # The dataset's metadata: logs, pictures and deploy.yaml name the classes.
                   "class_names": list(fmt.names)}
        if fmt.colors is not None:
            section["palette"] = [list(c) for c in fmt.colors.colors]
        return section

    config = {
        "batch_size": 4,
        "iters": 40000,
        "train_dataset": dataset("train", train_transforms),
        "val_dataset": dataset("val", val_transforms),
        "model": {"type": "UNet", "num_classes": fmt.num_classes, "use_deconv": False,
                  "pretrained": None},
        "loss": {"types": [{"type": "DiceLoss" if binary else "CrossEntropyLoss"}],
                 "coef": [1]},
        "optimizer": {"type": "SGD", "momentum": 0.9, "weight_decay": 4.0e-5},
        "lr_scheduler": {"type": "PolynomialDecay", "learning_rate": 0.01, "end_lr": 0,
                         "power": 0.9},
    }
    if binary:
        config["test_config"] = {"auc_roc": True}
    return config


def _config_text(config: Dict, name: str, dst: Path, fmt: MaskFormat, crop: int) -> str:
    recipe = _BINARY_RECIPE if fmt.num_classes == 2 else _MULTI_RECIPE
    classes = ", ".join(f"{i} {n}" for i, n in enumerate(fmt.names))
    header = [
        f"# {name}: written by tools/convert_dataset.py folder ({fmt.description}).",
        f"# Classes: {classes}; 255 = ignore. The recipe of {recipe}, crops {crop}x{crop}.",
        f"#   python tools/train.py --config {dst / f'unet_{name}.yml'} --do_eval",
        "# dataset_root is absolute: after moving the folder, edit it (or pass --opts).",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False,
                                                    default_flow_style=None)


# ------------------------------------------------------------------------ convert

def _write_image(src: Path, out: Path, rel_stem: str) -> Tuple[str, Tuple[int, int]]:
    """Copy (or re-encode as PNG) an image; its relative output path and (H, W)."""
    suffix = src.suffix.lower()
    try:
        image = read_image(str(src))
    except DatasetError:
        image = None
    if image is not None and suffix in _COPIED:
        rel = rel_stem + (".jpg" if suffix == ".jpeg" else ".tif" if suffix == ".tiff"
                          else suffix)
        try:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / rel)
        except OSError as exc:
            raise ConversionError(f"cannot write {out / rel}: {exc}") from exc
        return rel, image.shape[:2]
    if image is None:  # e.g. GIF without an OpenCV codec: Pillow decodes it
        image = np.asarray(decode_image(src.read_bytes(), str(src)).convert("RGB"))
    write_png(out / (rel_stem + ".png"), np.ascontiguousarray(image))
    return rel_stem + ".png", image.shape[:2]


def convert(images: PathLike, masks: PathLike, dst: PathLike, force: bool = False,
            mask_suffix: str = "", colors: Optional[PathLike] = None,
            ignore_value: Optional[int] = None, val_fraction: Optional[float] = None,
            seed: int = 0, val_list: Optional[PathLike] = None,
            name: Optional[str] = None) -> ConversionSummary:
    """Convert a folder of images + a folder of masks into DST (atomically)."""
    dst = Path(os.path.abspath(dst))
    if ignore_value is not None and not 0 <= int(ignore_value) <= 255:
        raise ConversionError(f"--ignore_value must be 0..255, got {ignore_value}")
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConversionError(f"--name {name!r}: use letters, digits, '_', '-' or '.'")
    name = name or default_name(dst)
    for src in (images, masks):
        check_destination(src, dst, force)
    table = load_color_table(colors) if colors is not None else None
    pairing = pair_files(images, masks, mask_suffix)
    if pairing.presplit:
        if val_fraction is not None or val_list is not None:
            raise ConversionError(f"{images} is already split into train/ and val/; drop "
                                  f"--val_fraction/--val_list")
        pairs = pairing.pairs
    elif val_fraction is not None and val_list is not None:
        raise ConversionError("pass --val_fraction or --val_list, not both")
    else:
        pairs = assign_splits(pairing.pairs, val_fraction, seed, val_list)
    for split in SPLITS:
        if not any(p.split == split for p in pairs):
            raise ConversionError(f"the {split} split has no image/mask pair; add some")
    fmt = scan_masks(pairs, table, ignore_value)

    lists: Dict[str, List[str]] = {split: [] for split in SPLITS}
    class_pixels = np.zeros(256, np.int64)
    sizes: Dict[Tuple[int, int], int] = {}
    with staging(dst, force) as out:
        for pair in tqdm(pairs, desc="folder", unit="img", disable=None, leave=False):
            image_rel, shape = _write_image(pair.image, out, f"images/{pair.split}/{pair.name}")
            label = read_class_mask(pair.mask, fmt)
            label_rel = f"annotations/{pair.split}/{pair.name}.png"
            write_png(out / label_rel, label)
            lists[pair.split].append(f"{image_rel} {label_rel}")
            class_pixels += np.bincount(label.ravel(), minlength=256)
            sizes[shape] = sizes.get(shape, 0) + 1
        write_lists(out, lists)
        min_side = min(min(s) for s in sizes)
        crop = crop_size_for(min_side)
        config = build_config(dst, fmt, crop, max(max(s) for s in sizes))
        write_bytes(out / f"unet_{name}.yml",
                    _config_text(config, name, dst, fmt, crop).encode("utf-8"))
        summary = _summary(name, dst, lists, fmt, class_pixels, sizes, pairing, crop)
        write_bytes(out / "summary.txt", (summary.format() + "\n").encode("utf-8"))
    return summary


def _summary(name: str, dst: Path, lists: Dict[str, List[str]], fmt: MaskFormat,
             class_pixels: np.ndarray, sizes: Dict[Tuple[int, int], int], pairing: Pairing,
             crop: int) -> ConversionSummary:
    total = max(int(class_pixels.sum()), 1)
    stats = {f"class {i} ({n}) pixels / all pixels": int(class_pixels[i]) / total
             for i, n in enumerate(fmt.names)}
    stats["ignored (255) pixels / all pixels"] = int(class_pixels[IGNORE]) / total
    shown = sorted(sizes.items(), key=lambda kv: -kv[1])
    size_text = ", ".join(f"{w}x{h} ({n})" for (h, w), n in shown[:_MAX_LISTED])
    notes = [f"mask format: {fmt.description}",
             f"image sizes (WxH): {size_text}" + (" ..." if len(shown) > _MAX_LISTED else ""),
             f"split: {'train/ and val/ subfolders' if pairing.presplit else 'see the lists'}",
             f"config: {dst / f'unet_{name}.yml'} (crop {crop}x{crop}; train it with python "
             f"tools/train.py --config {dst / f'unet_{name}.yml'} --do_eval)"]
    absent = [f"{i} ({n})" for i, n in enumerate(fmt.names) if not class_pixels[i]]
    warnings = list(fmt.warnings)
    if absent:
        warnings.append(f"class {', '.join(absent)} occurs in no mask")
    return ConversionSummary(f"folder ({name})", str(dst),
                             {s: len(v) for s, v in lists.items()}, stats,
                             skipped=list(pairing.skipped), notes=notes, warnings=warnings)


# ------------------------------------------------------------------------ command line

def add_arguments(parser) -> None:
    """The ``tools/convert_dataset.py folder`` options."""
    parser.add_argument("--images", required=True, help="folder of images (or with train/ "
                        "and val/ subfolders)")
    parser.add_argument("--masks", required=True, help="folder of masks, named like the images")
    parser.add_argument("dst", help="output folder (built atomically)")
    parser.add_argument("--mask_suffix", default="", help="mask stem = image stem + this, "
                        "e.g. _mask")
    parser.add_argument("--colors", default=None, help="colour table (JSON/YAML) for RGB masks")
    parser.add_argument("--ignore_value", type=int, default=None,
                        help="mask value (grey) written as 255 = ignore")
    parser.add_argument("--val_fraction", type=float, default=None,
                        help="share of pairs for val (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val_fraction split")
    parser.add_argument("--val_list", default=None, help="file naming the val images, one "
                        "per line")
    parser.add_argument("--name", default=None, help="dataset name (default: DST's name); "
                        "the config is DST/unet_<name>.yml")
    parser.add_argument("--force", action="store_true", help="replace a non-empty DST")


def convert_args(args) -> ConversionSummary:
    return convert(args.images, args.masks, args.dst, force=args.force,
                   mask_suffix=args.mask_suffix, colors=args.colors,
                   ignore_value=args.ignore_value, val_fraction=args.val_fraction,
                   seed=args.seed, val_list=args.val_list, name=args.name)


@CONVERTERS.register("folder")
class FolderConverter:
    """``tools/convert_dataset.py folder``: your own folders of images and masks."""

    description = "your own folder of images and a folder of masks (see 'folder --help')"
    add_arguments = staticmethod(add_arguments)
    run = staticmethod(convert_args)
    __call__ = staticmethod(convert)
