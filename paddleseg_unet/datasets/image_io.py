"""Reading images, labels and field-of-view masks, with one clear error per bad file.

Images are decoded with OpenCV straight to RGB (``IMREAD_COLOR_RGB``; older OpenCV:
``IMREAD_COLOR`` then BGR -> RGB), always HxWx3 uint8. Labels must keep their *stored*
values, which OpenCV does not always do:

- a palette PNG (colour type 3) is expanded by OpenCV to colours; we want its indices,
  so palette PNGs (and GIFs, which are always palette images) are read with Pillow;
- a 1/2/4-bit greyscale PNG is scaled by libpng to 0..255 (a 1-bit 0/1 mask would become
  0/255 = ignore); we undo the scaling exactly (value // (255 // (2**bits - 1))).

The PNG colour type and bit depth sit at fixed offsets of the IHDR chunk, so checking
them costs nothing: the file is read into memory once and decoded from that buffer
(``cv2.imdecode``, which also works for non-ASCII paths). A PNG's chunk CRCs are checked
first, so a corrupt file gets our one-line error and libpng never prints its own. Everything else (8/16-bit grey
PNG, TIFF, BMP...) goes through ``cv2.IMREAD_UNCHANGED``; a 3/4-channel label is
accepted only when its colour channels are equal (grey stored as RGB, e.g. STARE's PPMs).
"""
from __future__ import annotations

import io
import os
import zlib
from typing import Optional

import cv2
import numpy as np
from PIL import Image

__all__ = ["DatasetError", "DatasetNotFoundError", "read_image", "read_label", "read_mask",
           "check_label_values", "check_same_size"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# OpenCV >= 4.10 decodes straight to RGB, saving a full-image BGR -> RGB pass per read.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_PNG_PALETTE = 3
_PNG_GREY = 0


class DatasetError(Exception):
    """Bad dataset input: the message names the file (and line) and what to do."""


class DatasetNotFoundError(DatasetError):
    """A dataset root or list file does not exist."""


def _read_bytes(path: str, what: str) -> np.ndarray:
    if not os.path.exists(path):
        raise DatasetError(f"{what} not found: {path}")
    if not os.path.isfile(path):
        raise DatasetError(f"{what} is not a file: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"{what} cannot be read: {path} ({e})") from e
    if data.size == 0:
        raise DatasetError(f"{what} is an empty file: {path}")
    return data


def _check_png(data: np.ndarray, path: str, what: str) -> None:
    """Walk a PNG's chunks and verify each CRC before decoding it: libpng prints its own
    ``libpng error: ...`` line straight to the C stderr on a corrupt file (OpenCV gives no
    way to silence it), so a damaged or truncated PNG must never reach it. The CRCs cost
    a fraction of the decode (zlib.crc32 over the bytes, no copy)."""
    view = memoryview(data)
    offset, size = len(_PNG_MAGIC), len(view)
    while offset + 12 <= size:
        length = int.from_bytes(view[offset:offset + 4], "big")
        end = offset + 12 + length
        kind = bytes(view[offset + 4:offset + 8])
        if end > size:
            break
        crc = int.from_bytes(view[end - 4:end], "big")
        if zlib.crc32(view[offset + 4:end - 4]) != crc:
            name = kind.decode("latin-1") if kind.isalpha() else repr(kind)
            raise DatasetError(f"{what} is a corrupt PNG (chunk {name} fails its CRC check): "
                               f"{path}. Re-create or re-download the file.")
        if kind == b"IEND":
            return
        offset = end
    raise DatasetError(f"{what} is a truncated PNG (it ends before its IEND chunk): {path}. "
                       f"Re-create or re-download the file.")


def read_image(path: str) -> np.ndarray:
    """An image file as an HxWx3 RGB uint8 array (grey images are replicated)."""
    data = _read_bytes(path, "Image")
    if data[:8].tobytes() == _PNG_MAGIC:
        _check_png(data, path, "Image")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB)
    if img is None:
        raise DatasetError(f"Image cannot be decoded (corrupt or unsupported format): {path}")
    if img.dtype != np.uint8:  # IMREAD_COLOR* gives 8 bits already; be explicit anyway
        img = img.astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if _IMREAD_RGB is None else img


def _png_header(data: np.ndarray) -> Optional[tuple]:
    """(bit depth, colour type) of a PNG buffer, or None when it is not a PNG."""
    if data.size < 26 or data[:8].tobytes() != _PNG_MAGIC:
        return None
    return int(data[24]), int(data[25])


def _read_with_pillow(data: np.ndarray, path: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            if im.mode in ("P", "L", "I;16", "I"):
                return np.array(im)
            if im.mode == "1":
                return np.array(im).astype(np.uint8)
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"Label cannot be decoded (corrupt or unsupported format): "
                           f"{path} ({e})") from e


def read_label(path: str) -> np.ndarray:
    """A label file as an HxW integer array holding the stored values (see module doc)."""
    data = _read_bytes(path, "Label")
    header = _png_header(data)
    if data[:8].tobytes() == _PNG_MAGIC:
        _check_png(data, path, "Label")
    if header is not None and header[1] == _PNG_PALETTE:
        label = _read_with_pillow(data, path)
    elif data[:4].tobytes() in (b"GIF8",):
        label = _read_with_pillow(data, path)
    else:
        label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if label is None:
            # OpenCV builds without a codec (e.g. GIF) still have Pillow to fall back on.
            label = _read_with_pillow(data, path)
        elif header is not None and header[1] == _PNG_GREY and header[0] < 8:
            label = label // (255 // (2 ** header[0] - 1))
    if label.ndim == 3:
        colour = label[..., :3]
        if colour.shape[2] == 1 or (np.array_equal(colour[..., 0], colour[..., 1])
                                    and np.array_equal(colour[..., 0], colour[..., 2])):
            label = np.ascontiguousarray(colour[..., 0])
        else:
            raise DatasetError(
                f"Label is a colour image, expected one channel of class indices: {path}. "
                "Convert colour-coded labels to index PNGs (0..K-1, 255 = ignore) first, "
                "e.g. with tools/convert_dataset.py.")
    if label.ndim != 2:
        raise DatasetError(f"Label has unexpected shape {label.shape}: {path}")
    return label


def read_mask(path: str) -> np.ndarray:
    """A binary mask (field of view) as an HxW uint8 array of 0/1 (anything > 0 is 1)."""
    mask = read_label(path)
    return (mask > 0).astype(np.uint8)


def check_same_size(img: np.ndarray, other: np.ndarray, img_path: str, other_path: str,
                    what: str = "Label") -> None:
    """Raise unless ``other`` has the image's height and width."""
    if img.shape[:2] != other.shape[:2]:
        raise DatasetError(
            f"{what} and image differ in size: {other_path} is "
            f"{other.shape[1]}x{other.shape[0]} (WxH) but {img_path} is "
            f"{img.shape[1]}x{img.shape[0]}. Each {what.lower()} must match its image.")


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int,
                       path: str) -> None:
    """Raise unless every value is in 0..num_classes-1 or ``ignore_index``.

    A label whose values lie in 0..num_classes-1 (its min and max, one cheap pass each)
    passes at once; otherwise uint8 labels are checked with a 256-bin bincount (no sort)
    and wider types with ``np.unique``.
    """
    if label.size == 0 or (label.min() >= 0 and label.max() < num_classes):
        return
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=256)
        present = np.flatnonzero(counts)
    else:
        present = np.unique(label)
    bad = [int(v) for v in present if not (0 <= v < num_classes or v == ignore_index)]
    if not bad:
        return
    shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    hint = ""
    if 255 in bad and num_classes == 2:
        hint = (" A 0/255 mask must be stored as 0/1: convert the masks with python "
                "tools/convert_dataset.py folder (see docs/custom_data.md).")
    raise DatasetError(
        f"Label {path} has values {shown} outside 0..{num_classes - 1} "
        f"(ignore value {ignore_index}).{hint}")

