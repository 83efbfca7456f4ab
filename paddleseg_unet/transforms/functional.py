"""cv2/numpy primitives behind the transforms.

Images are HxWxC arrays, uint8 as read (kept uint8 as long as possible: cv2 is fastest on
uint8 and the colour ops are 256-entry lookup tables), float32 once something needs it.
Labels and field-of-view masks are HxW integer arrays and are only ever moved with
nearest-neighbour sampling, so they never gain values they did not have (except the stated
padding value). No function writes into its input arrays: datasets may cache decoded images.

Colour operations (uint8 RGB in, uint8 RGB out, results rounded to nearest and clipped to
0..255; they agree with Pillow's ImageEnhance to within one grey level):

- brightness f: ``out = f * img`` (a blend with black).
- contrast f: ``out = m + f * (img - m)`` with ``m`` the mean grey level of the whole image
  (luma 0.299 R + 0.587 G + 0.114 B), rounded to an integer.
- saturation f: ``out = g + f * (img - g)`` with ``g`` the per-pixel grey (luma) image.
- hue delta: convert to full-range HSV (H on 0..255 for a full turn), ``H = (H + delta) mod
  256`` with delta rounded to an integer, S and V untouched, convert back.
- sharpness f: ``out = s + f * (img - s)`` with ``s`` the image smoothed by the 3x3 kernel
  [[1,1,1],[1,5,1],[1,1,1]]/13; the one-pixel border is left unsmoothed.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import cv2
import numpy as np

PadValue = Union[float, Sequence[float]]

INTERPOLATIONS = {
    "NEAREST": cv2.INTER_NEAREST,
    "LINEAR": cv2.INTER_LINEAR,
    "CUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA,
    "LANCZOS4": cv2.INTER_LANCZOS4,
}

# Dtypes cv2 processes natively; others (int64, bool, ...) go through int32 and back.
_CV2_DTYPES = (np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64)

_SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
_IDENTITY_LUT = np.arange(256, dtype=np.int32)


# ----------------------------------------------------------------------------- sizes
def round_half_even(x: float) -> int:
    """Python's round(): PaddleSeg computes every output size as int(round(x))."""
    return int(round(x))


def scaled_size(h: int, w: int, scale: float) -> Tuple[int, int]:
    """(h, w) scaled by ``scale``, each side rounded, at least one pixel."""
    return max(round_half_even(h * scale), 1), max(round_half_even(w * scale), 1)


def size_by_long(h: int, w: int, long_size: int) -> Tuple[int, int]:
    """(h, w) scaled so that the longer side becomes ``long_size``."""
    return scaled_size(h, w, float(long_size) / max(h, w))


def size_by_short(h: int, w: int, short_size: int) -> Tuple[int, int]:
    """(h, w) scaled so that the shorter side becomes ``short_size``."""
    return scaled_size(h, w, float(short_size) / min(h, w))


def size_keep_ratio(h: int, w: int, target_hw: Tuple[int, int]) -> Tuple[int, int]:
    """Largest aspect-preserving (h, w) whose long side fits the target's long side and
    whose short side fits the target's short side (orientation-agnostic, as PaddleSeg)."""
    scale = min(max(target_hw) / max(h, w), min(target_hw) / min(h, w))
    return scaled_size(h, w, scale)


# ----------------------------------------------------------------------------- dtype helpers
def _cv2_ready(arr: np.ndarray) -> np.ndarray:
    """A contiguous array of a dtype cv2 accepts (int64/bool labels become int32)."""
    if arr.dtype.type not in _CV2_DTYPES:
        arr = arr.astype(np.int32)
    return np.ascontiguousarray(arr)


def _restore(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    """cv2 drops a trailing channel axis of length 1 and may change the dtype: undo both."""
    if out.ndim == like.ndim - 1:
        out = out[..., None]
    return out.astype(like.dtype, copy=False)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 view of an image: as is if already uint8, else rounded and clipped to 0..255."""
    if img.dtype == np.uint8:
        return img
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _is_integral(value: PadValue) -> bool:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return bool(np.all(values == np.round(values)) and np.all((values >= 0) & (values <= 255)))


def promote_for_padding(img: np.ndarray, value: PadValue) -> np.ndarray:
    """float32 copy of a uint8 image if ``value`` is not representable in uint8 (127.5),
    so that padding is exact; any other image is returned unchanged."""
    if img.dtype == np.uint8 and not _is_integral(value):
        return img.astype(np.float32)
    return img


def _fill_value(value: PadValue, channels: int) -> Union[float, np.ndarray]:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size == 1:
        return float(values[0])
    if values.size != channels:
        raise ValueError(f"padding value {value!r} has {values.size} entries but the image "
                         f"has {channels} channels")
    return values


def _cv2_border_value(value: PadValue) -> Tuple[float, float, float, float]:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64)).tolist()
    if len(values) == 1:
        values = values * 4
    return tuple((values + [0.0] * 4)[:4])  # type: ignore[return-value]


# ----------------------------------------------------------------------------- geometry
def resize(img: np.ndarray, size_hw: Tuple[int, int], interp: int = cv2.INTER_LINEAR
           ) -> np.ndarray:
    """cv2.resize to (h, w), keeping the input's dtype and channel axis."""
    h, w = size_hw
    if img.shape[:2] == (h, w):
        return img
    out = cv2.resize(_cv2_ready(img), (w, h), interpolation=interp)
    return _restore(out, img)


def resize_nearest(arr: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize for labels and masks (never creates new values)."""
    return resize(arr, size_hw, cv2.INTER_NEAREST)


def nearest_indices(src_len: int, dst_len: int, start: int, count: int) -> np.ndarray:
    """Source indices of destination pixels start..start+count-1 when resizing a side of
    src_len to dst_len with nearest neighbour: floor(i * src/dst), as cv2.INTER_NEAREST."""
    step = 1.0 / (dst_len / src_len)  # the same double arithmetic as OpenCV
    idx = np.floor(np.arange(start, start + count, dtype=np.float64) * step).astype(np.intp)
    return np.minimum(idx, src_len - 1)


def resize_nearest_window(arr: np.ndarray, size_hw: Tuple[int, int], top: int, left: int,
                          h: int, w: int) -> np.ndarray:
    """The (h, w) window at (top, left) of ``arr`` nearest-resized to ``size_hw``, computed
    without resizing the rest; equal to ``resize_nearest(arr, size_hw)[top:top+h, ...]``."""
    rows = nearest_indices(arr.shape[0], size_hw[0], top, h)
    cols = nearest_indices(arr.shape[1], size_hw[1], left, w)
    return np.take(np.take(arr, rows, axis=0), cols, axis=1)


def resize_linear_window(img: np.ndarray, size_hw: Tuple[int, int], top: int, left: int,
                         h: int, w: int) -> np.ndarray:
    """The (h, w) window at (top, left) of ``img`` bilinearly resized to ``size_hw``,
    computed without resizing the rest. Same geometry as cv2.resize (pixel centres
    aligned, edges replicated); OpenCV's warp rounds differently from its resize, so pixels
    may differ from ``resize(img, size_hw)[top:top+h, left:left+w]`` by one grey level."""
    if img.ndim == 3 and img.shape[2] > 4:  # cv2 warps handle at most 4 channels
        return resize(img, size_hw)[top:top + h, left:left + w].copy()
    sx = img.shape[1] / size_hw[1]
    sy = img.shape[0] / size_hw[0]
    # Destination pixel (x, y) of the window samples source ((left+x+0.5)*sx-0.5, ...).
    mat = np.array([[sx, 0.0, (left + 0.5) * sx - 0.5], [0.0, sy, (top + 0.5) * sy - 0.5]])
    out = cv2.warpAffine(_cv2_ready(img), mat, (w, h),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    return _restore(out, img)


def crop_with_padding(arr: np.ndarray, top: int, left: int, crop_h: int, crop_w: int,
                      value: PadValue) -> np.ndarray:
    """The (crop_h, crop_w) window at (top, left) of ``arr`` padded at the bottom/right
    with ``value`` to at least the window's extent; padding is only materialised inside the
    window. ``arr``'s dtype is kept, so call :func:`promote_for_padding` first for images."""
    h, w = arr.shape[:2]
    if top == 0 and left == 0 and (h, w) == (crop_h, crop_w):
        return arr
    bottom, right = min(top + crop_h, h), min(left + crop_w, w)
    inner = arr[top:bottom, left:right]
    if inner.shape[:2] == (crop_h, crop_w):
        return inner.copy()  # a copy: later in-place work must not reach the source
    channels = arr.shape[2] if arr.ndim == 3 else 1
    out = np.empty((crop_h, crop_w) + arr.shape[2:], dtype=arr.dtype)
    out[...] = _fill_value(value, channels)
    out[: inner.shape[0], : inner.shape[1]] = inner
    return out


def hflip(arr: np.ndarray) -> np.ndarray:
    """Mirror left-right (a contiguous copy)."""
    return np.ascontiguousarray(arr[:, ::-1])


def vflip(arr: np.ndarray) -> np.ndarray:
    """Mirror top-bottom (a contiguous copy)."""
    return np.ascontiguousarray(arr[::-1])


def rotation_matrix(h: int, w: int, angle: float) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Affine matrix rotating by ``angle`` degrees (counter-clockwise) about (w//2, h//2)
    onto a canvas enlarged to hold the whole rotated image, and that canvas's (h, w)."""
    cx, cy = w // 2, h // 2
    mat = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    cos, sin = abs(mat[0, 0]), abs(mat[0, 1])
    new_w = int(h * sin + w * cos)
    new_h = int(h * cos + w * sin)
    mat[0, 2] += new_w / 2 - cx
    mat[1, 2] += new_h / 2 - cy
    return mat, (new_h, new_w)


def warp_affine(arr: np.ndarray, mat: np.ndarray, size_hw: Tuple[int, int], interp: int,
                value: PadValue) -> np.ndarray:
    """cv2.warpAffine onto (h, w) with a constant border, keeping dtype and channel axis."""
    h, w = size_hw
    out = cv2.warpAffine(_cv2_ready(arr), mat, (w, h), flags=interp,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=_cv2_border_value(value))
    return _restore(out, arr)


# ----------------------------------------------------------------------------- colour
def _lut_from(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _blend(img: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
    """other + factor * (img - other), rounded and saturated to uint8."""
    return cv2.addWeighted(img, float(factor), other, 1.0 - float(factor), 0.0)


def _check_rgb_uint8(img: np.ndarray, what: str) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{what} needs an HxWx3 uint8 RGB image, got {img.dtype} "
                         f"{img.shape}")


def grey(img: np.ndarray) -> np.ndarray:
    """Per-pixel luma 0.299 R + 0.587 G + 0.114 B of an RGB uint8 image, uint8 HxW."""
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def adjust_brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """``factor * img`` through a lookup table."""
    _check_rgb_uint8(img, "adjust_brightness")
    return cv2.LUT(np.ascontiguousarray(img), _lut_from(_IDENTITY_LUT * float(factor)))


def adjust_contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the image's mean grey level (rounded to an integer)."""
    _check_rgb_uint8(img, "adjust_contrast")
    # The mean of the luma is the luma of the channel means: no grey image needed.
    mean_r, mean_g, mean_b = cv2.mean(np.ascontiguousarray(img))[:3]
    m = int(0.299 * mean_r + 0.587 * mean_g + 0.114 * mean_b + 0.5)
    return cv2.LUT(np.ascontiguousarray(img), _lut_from(m + float(factor) * (_IDENTITY_LUT - m)))


def adjust_saturation(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the per-pixel grey image."""
    _check_rgb_uint8(img, "adjust_saturation")
    img = np.ascontiguousarray(img)
    return _blend(img, cv2.cvtColor(grey(img), cv2.COLOR_GRAY2RGB), factor)


def adjust_hue(img: np.ndarray, delta: float) -> np.ndarray:
    """Rotate the hue by ``delta`` on the 0..255 full-turn scale (full-range HSV)."""
    _check_rgb_uint8(img, "adjust_hue")
    shift = int(round(float(delta)))
    if shift % 256 == 0:
        return img.copy()
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV_FULL)
    lut = np.repeat(_IDENTITY_LUT.astype(np.uint8)[:, None], 3, axis=1)
    lut[:, 0] = (_IDENTITY_LUT + shift) % 256
    hsv = cv2.LUT(hsv, np.ascontiguousarray(lut.reshape(256, 1, 3)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def smooth(img: np.ndarray) -> np.ndarray:
    """3x3 smoothing (centre weight 5, neighbours 1, /13); the border row/column copied."""
    img = np.ascontiguousarray(img)
    out = cv2.filter2D(img, -1, _SMOOTH_KERNEL, borderType=cv2.BORDER_REPLICATE)
    out[0], out[-1], out[:, 0], out[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]
    return out


def adjust_sharpness(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the smoothed image (factor > 1 sharpens, < 1 blurs)."""
    _check_rgb_uint8(img, "adjust_sharpness")
    img = np.ascontiguousarray(img)
    return _blend(img, smooth(img), factor)


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(img / 255 - mean) / std per channel, float32 (one multiply and one subtract)."""
    scale = 1.0 / (255.0 * np.asarray(std, np.float64))
    offset = np.asarray(mean, np.float64) / np.asarray(std, np.float64)
    out = img.astype(np.float32)  # always a fresh array: the in-place ops below are safe
    # Broadcasting a length-3 vector makes numpy loop 3 elements at a time (40x slower than
    # a scalar): use scalars when the channels agree (the default) and cv2 otherwise.
    if np.all(scale == scale[0]) and np.all(offset == offset[0]):
        out *= np.float32(scale[0])
        out -= np.float32(offset[0])
    elif out.shape[2] <= 4:
        cv2.multiply(out, tuple(scale.tolist()) + (0.0,) * (4 - len(scale)), dst=out)
        cv2.subtract(out, tuple(offset.tolist()) + (0.0,) * (4 - len(offset)), dst=out)
    else:
        out *= scale.astype(np.float32)
        out -= offset.astype(np.float32)
    return out


def to_chw_float32(img: np.ndarray) -> np.ndarray:
    """HxWxC -> contiguous CxHxW float32 (one copy, the dtype conversion included)."""
    return np.ascontiguousarray(np.transpose(img, (2, 0, 1)), dtype=np.float32)
