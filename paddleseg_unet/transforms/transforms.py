"""Registered data transforms and :class:`Compose`, PaddleSeg-compatible in names and arguments.

Every transform is a callable ``t(sample, rng) -> sample`` on the sample dict of the data
contract ('img' HxWx3, optional 'label' and 'fov' HxW, 'trans_info' list, 'img_path').
It returns a new dict (or the same one, untouched) and never modifies the dict or the
arrays it was given (datasets may cache them).
Randomness comes only from ``rng``, the per-sample ``numpy.random.Generator``; a random
transform called without one raises TypeError. Geometric transforms move 'label' and 'fov'
with nearest-neighbour sampling; padding fills the label with ``label_padding_value``
(255 = ignore) and the field of view with 0 (outside the eye).

Size records: Resize, ResizeByLong, ResizeByShort and ResizeStepScaling append
``('resize', (h, w))`` and Padding appends ``('padding', (h, w))`` to 'trans_info', with the
size before the op. RandomPaddingCrop and RandomRotation record nothing: a crop or a
rotation cannot be undone by resizing or un-padding, and both are train-only.

Sizes given by users are (w, h), as in PaddleSeg; sizes inside the code are (h, w).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from paddleseg_unet.cvlibs.errors import ComponentArgumentError
from paddleseg_unet.cvlibs.registry import TRANSFORMS, build
from paddleseg_unet.transforms import functional as F

Sample = Dict[str, Any]
SizeArg = Union[int, Sequence[int]]
PadArg = Union[float, Sequence[float]]

_MASK_KEYS = ("label", "fov")
_FOV_PADDING = 0


# ----------------------------------------------------------------------------- helpers
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class _Transform:
    """Shared argument checking, sample bookkeeping and repr."""

    random = False  # True for transforms that draw from ``rng``

    def _error(self, arg: str, problem: str) -> ComponentArgumentError:
        return ComponentArgumentError(f"{type(self).__name__}: {arg} {problem}", arg)

    def _size_wh(self, arg: str, value: SizeArg) -> Tuple[int, int]:
        """A user size (an int, or (w, h)) as (w, h) of positive ints."""
        if _is_int(value):
            value = (value, value)
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(_is_int(v) for v in value)):
            raise self._error(arg, f"must be an int or a pair of ints (width, height), "
                                   f"got {value!r}")
        if min(value) <= 0:
            raise self._error(arg, f"must be positive, got {value!r}")
        return int(value[0]), int(value[1])

    def _positive_int(self, arg: str, value: Any) -> int:
        if not _is_int(value) or value <= 0:
            raise self._error(arg, f"must be a positive int, got {value!r}")
        return int(value)

    def _probability(self, arg: str, value: Any) -> float:
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise self._error(arg, f"must be a probability in [0, 1], got {value!r}")
        return float(value)

    def _in_range(self, arg: str, value: Any, low: float, high: float) -> float:
        if not _is_number(value) or not low <= value <= high:
            raise self._error(arg, f"must be a number in [{low}, {high}], got {value!r}")
        return float(value)

    def _pad_value(self, arg: str, value: Any) -> PadArg:
        if _is_number(value):
            return float(value)
        if (isinstance(value, (list, tuple)) and len(value) > 0
                and all(_is_number(v) for v in value)):
            return tuple(float(v) for v in value)
        raise self._error(arg, f"must be a number or a list of numbers (one per channel), "
                               f"got {value!r}")

    def _label_pad_value(self, arg: str, value: Any) -> int:
        if not _is_int(value):
            raise self._error(arg, f"must be an int (255 marks ignored pixels), got {value!r}")
        return int(value)

    def _need_rng(self, rng: Optional[np.random.Generator]) -> np.random.Generator:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{type(self).__name__} is random and needs the per-sample "
                            f"numpy.random.Generator as its rng argument, got {rng!r}")
        return rng

    def _image(self, sample: Sample) -> np.ndarray:
        img = sample.get("img") if isinstance(sample, dict) else None
        if not isinstance(img, np.ndarray) or img.ndim != 3:
            where = sample.get("img_path", "<in memory>") if isinstance(sample, dict) else ""
            got = (f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray)
                   else type(img).__name__)
            raise ValueError(f"{type(self).__name__}: sample 'img' must be an HxWxC array "
                             f"(image {where}), got {got}")
        return img

    def _masks(self, sample: Sample) -> List[str]:
        return [k for k in _MASK_KEYS if sample.get(k) is not None]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _record(sample: Sample, kind: str, size_hw: Tuple[int, int]) -> None:
    """Append a size record to a fresh copy of the sample's trans_info list."""
    sample["trans_info"] = list(sample.get("trans_info") or []) + [(kind, tuple(size_hw))]


def _resized(sample: Sample, img: np.ndarray, size_hw: Tuple[int, int], interp: int,
             masks: List[str]) -> Sample:
    """A copy of ``sample`` with the image and masks resized to ``size_hw``."""
    out = dict(sample)
    _record(out, "resize", img.shape[:2])
    out["img"] = F.resize(img, size_hw, interp)
    for key in masks:
        out[key] = F.resize_nearest(sample[key], size_hw)
    return out


# ----------------------------------------------------------------------------- resizing
@TRANSFORMS.register()
class ResizeStepScaling(_Transform):
    """Scale by a factor drawn uniformly from {min, min+step, ..., max} (uniformly from
    [min, max] if step is 0); image bilinear, label/fov nearest."""

    random = True

    def __init__(self, min_scale_factor: float = 0.75, max_scale_factor: float = 1.25,
                 scale_step_size: float = 0.25) -> None:
        for arg, value in (("min_scale_factor", min_scale_factor),
                           ("max_scale_factor", max_scale_factor)):
            if not _is_number(value) or value <= 0:
                raise self._error(arg, f"must be a positive number, got {value!r}")
        if min_scale_factor > max_scale_factor:
            raise self._error("min_scale_factor", f"({min_scale_factor}) must not exceed "
                                                  f"max_scale_factor ({max_scale_factor})")
        if not _is_number(scale_step_size) or scale_step_size < 0:
            raise self._error("scale_step_size", f"must be a number >= 0, "
                                                 f"got {scale_step_size!r}")
        self.min_scale_factor = float(min_scale_factor)
        self.max_scale_factor = float(max_scale_factor)
        self.scale_step_size = float(scale_step_size)
        span = self.max_scale_factor - self.min_scale_factor
        if span == 0 or self.scale_step_size == 0:
            self._scales = None
        else:
            # The epsilon keeps e.g. (1.0 - 0.5) / 0.1 = 4.999... from losing the last step.
            steps = int(np.floor(span / self.scale_step_size + 1e-9)) + 1
            self._scales = self.min_scale_factor + self.scale_step_size * np.arange(steps)

    def scales(self) -> Optional[np.ndarray]:
        """The discrete set of factors drawn from (None when continuous or fixed)."""
        return None if self._scales is None else self._scales.copy()

    def draw_scale(self, rng: np.random.Generator) -> float:
        if self.min_scale_factor == self.max_scale_factor:
            return self.min_scale_factor
        if self._scales is None:
            return float(rng.uniform(self.min_scale_factor, self.max_scale_factor))
        return float(self._scales[rng.integers(len(self._scales))])

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        img = self._image(sample)
        scale = self.draw_scale(self._need_rng(rng))
        size = F.scaled_size(img.shape[0], img.shape[1], scale)
        return _resized(sample, img, size, F.INTERPOLATIONS["LINEAR"], self._masks(sample))


class _ResizeTo(_Transform):
    """A deterministic resize: subclasses say to which (h, w) size and how."""

    def _size(self, h: int, w: int) -> Tuple[int, int]:
        raise NotImplementedError(type(self).__name__)

    def _interp(self, rng: Optional[np.random.Generator]) -> int:
        return F.INTERPOLATIONS["LINEAR"]

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        img = self._image(sample)
        return _resized(sample, img, self._size(img.shape[0], img.shape[1]),
                        self._interp(rng), self._masks(sample))


@TRANSFORMS.register()
class Resize(_ResizeTo):
    """Resize to target_size (w, h); with keep_ratio, to the largest aspect-preserving size
    fitting it (long side to the target's long side, short to short)."""

    def __init__(self, target_size: SizeArg = (512, 512), interp: str = "LINEAR",
                 keep_ratio: bool = False) -> None:
        self.target_size = self._size_wh("target_size", target_size)
        if interp != "RANDOM" and interp not in F.INTERPOLATIONS:
            raise self._error("interp", f"must be one of "
                                        f"{sorted(F.INTERPOLATIONS) + ['RANDOM']}, "
                                        f"got {interp!r}")
        if not isinstance(keep_ratio, bool):
            raise self._error("keep_ratio", f"must be true or false, got {keep_ratio!r}")
        self.interp = interp
        self.keep_ratio = keep_ratio

    @property
    def random(self) -> bool:  # type: ignore[override]
        return self.interp == "RANDOM"

    def _interp(self, rng: Optional[np.random.Generator]) -> int:
        if self.interp != "RANDOM":
            return F.INTERPOLATIONS[self.interp]
        names = sorted(F.INTERPOLATIONS)
        return F.INTERPOLATIONS[names[self._need_rng(rng).integers(len(names))]]

    def _size(self, h: int, w: int) -> Tuple[int, int]:
        target_w, target_h = self.target_size
        if self.keep_ratio:
            return F.size_keep_ratio(h, w, (target_h, target_w))
        return target_h, target_w


@TRANSFORMS.register()
class ResizeByLong(_ResizeTo):
    """Scale so that the long side becomes long_size (sides rounded half to even)."""

    def __init__(self, long_size: int) -> None:
        self.long_size = self._positive_int("long_size", long_size)

    def _size(self, h: int, w: int) -> Tuple[int, int]:
        return F.size_by_long(h, w, self.long_size)


@TRANSFORMS.register()
class ResizeByShort(_ResizeTo):
    """Scale so that the short side becomes short_size (sides rounded half to even)."""

    def __init__(self, short_size: int) -> None:
        self.short_size = self._positive_int("short_size", short_size)

    def _size(self, h: int, w: int) -> Tuple[int, int]:
        return F.size_by_short(h, w, self.short_size)


# ----------------------------------------------------------------------------- crop / pad
class _Padded(_Transform):
    """Common padding arguments."""

    def _set_padding(self, im_padding_value: PadArg, label_padding_value: int) -> None:
        self.im_padding_value = self._pad_value("im_padding_value", im_padding_value)
        self.label_padding_value = self._label_pad_value("label_padding_value",
                                                         label_padding_value)

    def _window(self, sample: Sample, img: np.ndarray, top: int, left: int, crop_h: int,
                crop_w: int) -> Sample:
        """A copy of ``sample`` cut to the window, padded bottom/right where it overhangs."""
        h, w = img.shape[:2]
        if top + crop_h > h or left + crop_w > w:
            img = F.promote_for_padding(img, self.im_padding_value)
        out = dict(sample)
        out["img"] = F.crop_with_padding(img, top, left, crop_h, crop_w, self.im_padding_value)
        for key in self._masks(sample):
            value = self.label_padding_value if key == "label" else _FOV_PADDING
            out[key] = F.crop_with_padding(sample[key], top, left, crop_h, crop_w, value)
        return out


@TRANSFORMS.register()
class RandomPaddingCrop(_Padded):
    """Pad bottom/right up to crop_size (w, h) if smaller, then cut a uniformly random
    crop_size window."""

    random = True

    def __init__(self, crop_size: SizeArg = (512, 512), im_padding_value: PadArg = 127.5,
                 label_padding_value: int = 255) -> None:
        self.crop_size = self._size_wh("crop_size", crop_size)
        self._set_padding(im_padding_value, label_padding_value)

    def draw_offsets(self, h: int, w: int, rng: np.random.Generator) -> Tuple[int, int]:
        """(top, left) of the window in an (h, w) image padded up to the crop size."""
        crop_w, crop_h = self.crop_size
        top = int(rng.integers(max(h, crop_h) - crop_h + 1))
        left = int(rng.integers(max(w, crop_w) - crop_w + 1))
        return top, left

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = self._need_rng(rng)
        img = self._image(sample)
        top, left = self.draw_offsets(img.shape[0], img.shape[1], rng)
        return self._window(sample, img, top, left, self.crop_size[1], self.crop_size[0])


@TRANSFORMS.register()
class Padding(_Padded):
    """Pad bottom/right to target_size (w, h); an image larger than that is an error."""

    def __init__(self, target_size: SizeArg, im_padding_value: PadArg = 127.5,
                 label_padding_value: int = 255) -> None:
        self.target_size = self._size_wh("target_size", target_size)
        self._set_padding(im_padding_value, label_padding_value)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        img = self._image(sample)
        target_w, target_h = self.target_size
        h, w = img.shape[:2]
        if h > target_h or w > target_w:
            raise ValueError(
                f"Padding: image {sample.get('img_path', '<in memory>')} is {w}x{h} (w x h), "
                f"larger than target_size {target_w}x{target_h}; raise target_size or resize "
                f"first")
        out = self._window(sample, img, 0, 0, target_h, target_w)
        _record(out, "padding", (h, w))
        return out


# ----------------------------------------------------------------------------- flips / rotation
class _RandomFlip(_Transform):
    random = True
    _flip: Callable[[np.ndarray], np.ndarray]

    def __init__(self, prob: float) -> None:
        self.prob = self._probability("prob", prob)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        img = self._image(sample)
        if not self._need_rng(rng).random() < self.prob:
            return sample
        out = dict(sample)
        out["img"] = type(self)._flip(img)
        for key in self._masks(sample):
            out[key] = type(self)._flip(sample[key])
        return out


@TRANSFORMS.register()
class RandomHorizontalFlip(_RandomFlip):
    """Mirror left-right with probability prob."""

    _flip = staticmethod(F.hflip)

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__(prob)


@TRANSFORMS.register()
class RandomVerticalFlip(_RandomFlip):
    """Mirror top-bottom with probability prob."""

    _flip = staticmethod(F.vflip)

    def __init__(self, prob: float = 0.1) -> None:
        super().__init__(prob)


@TRANSFORMS.register()
class RandomRotation(_Padded):
    """Rotate by an angle drawn from U(-max_rotation, max_rotation) degrees about the
    centre, onto a canvas enlarged to hold the whole image; corners are padded."""

    random = True

    def __init__(self, max_rotation: float = 15, im_padding_value: PadArg = 127.5,
                 label_padding_value: int = 255) -> None:
        self.max_rotation = self._in_range("max_rotation", max_rotation, 0.0, 180.0)
        self._set_padding(im_padding_value, label_padding_value)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = self._need_rng(rng)
        img = self._image(sample)
        if self.max_rotation <= 0:
            return sample
        angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
        mat, size = F.rotation_matrix(img.shape[0], img.shape[1], angle)
        img = F.promote_for_padding(img, self.im_padding_value)
        out = dict(sample)
        out["img"] = F.warp_affine(img, mat, size, F.INTERPOLATIONS["LINEAR"],
                                   self.im_padding_value)
        for key in self._masks(sample):
            value = self.label_padding_value if key == "label" else _FOV_PADDING
            out[key] = F.warp_affine(sample[key], mat, size, F.INTERPOLATIONS["NEAREST"],
                                     value)
        return out


# ----------------------------------------------------------------------------- photometric
@TRANSFORMS.register()
class RandomDistort(_Transform):
    """Brightness, contrast, saturation, hue and sharpness changes, in a random order, each
    applied with its own probability. Factors are drawn from U(1 - range, 1 + range); the
    hue shift from U(-hue_range, hue_range) on the 0..255 full-turn hue scale. See
    :mod:`paddleseg_unet.transforms.functional` for how each op is defined. Works on uint8
    (a float image is rounded and clipped to uint8 first) and returns uint8."""

    random = True

    def __init__(self, brightness_range: float = 0.5, brightness_prob: float = 0.5,
                 contrast_range: float = 0.5, contrast_prob: float = 0.5,
                 saturation_range: float = 0.5, saturation_prob: float = 0.5,
                 hue_range: float = 18, hue_prob: float = 0.5,
                 sharpness_range: float = 0.5, sharpness_prob: float = 0) -> None:
        self.brightness_range = self._in_range("brightness_range", brightness_range, 0, 1)
        self.brightness_prob = self._probability("brightness_prob", brightness_prob)
        self.contrast_range = self._in_range("contrast_range", contrast_range, 0, 1)
        self.contrast_prob = self._probability("contrast_prob", contrast_prob)
        self.saturation_range = self._in_range("saturation_range", saturation_range, 0, 1)
        self.saturation_prob = self._probability("saturation_prob", saturation_prob)
        self.hue_range = self._in_range("hue_range", hue_range, 0, 128)
        self.hue_prob = self._probability("hue_prob", hue_prob)
        self.sharpness_range = self._in_range("sharpness_range", sharpness_range, 0, 1)
        self.sharpness_prob = self._probability("sharpness_prob", sharpness_prob)
        self._ops = (
            (self.brightness_prob, 1 - self.brightness_range, 1 + self.brightness_range,
             F.adjust_brightness),
            (self.contrast_prob, 1 - self.contrast_range, 1 + self.contrast_range,
             F.adjust_contrast),
            (self.saturation_prob, 1 - self.saturation_range, 1 + self.saturation_range,
             F.adjust_saturation),
            (self.hue_prob, -self.hue_range, self.hue_range, F.adjust_hue),
            (self.sharpness_prob, 1 - self.sharpness_range, 1 + self.sharpness_range,
             F.adjust_sharpness),
        )

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        rng = self._need_rng(rng)
        img = self._image(sample)
        if img.shape[2] != 3:
            raise ValueError(f"RandomDistort: needs a 3-channel RGB image, got "
                             f"{img.shape[2]} channels ({sample.get('img_path', '')})")
        img = F.to_uint8(img)
        for index in rng.permutation(len(self._ops)):
            prob, low, high, op = self._ops[index]
            # An op with probability 0 draws nothing: sharpness (off by default) is free.
            if prob > 0 and rng.random() < prob:
                img = op(img, float(rng.uniform(low, high)))
        out = dict(sample)
        out["img"] = img
        return out


@TRANSFORMS.register()
class Normalize(_Transform):
    """img -> (img / 255 - mean) / std per channel, float32 HxWxC."""

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        for arg, value in (("mean", mean), ("std", std)):
            if (not isinstance(value, (list, tuple)) or len(value) == 0
                    or not all(_is_number(v) for v in value)):
                raise self._error(arg, f"must be a list of numbers (one per channel), "
                                       f"got {value!r}")
        if len(mean) != len(std):
            raise self._error("mean", f"and std must have the same length, got {len(mean)} "
                                      f"and {len(std)}")
        if any(s == 0 for s in std):
            raise self._error("std", f"must not contain 0, got {std!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        img = self._image(sample)
        if img.shape[2] != len(self.mean):
            raise ValueError(f"Normalize: mean/std have {len(self.mean)} entries but the "
                             f"image has {img.shape[2]} channels "
                             f"({sample.get('img_path', '<in memory>')})")
        out = dict(sample)
        out["img"] = F.normalize(img, self.mean, self.std)
        return out


# ----------------------------------------------------------------------------- pipeline
class _ScaleThenCrop:
    """ResizeStepScaling immediately followed by RandomPaddingCrop, computing only the crop
    window of the scaled image instead of scaling all of it (a 128x128 crop of a DRIVE image
    scaled 2x is 1/80 of the pixels). The random draws, the label/fov windows and trans_info are
    identical to running the two in turn; image pixels may differ by one grey level (OpenCV's
    warp and resize round differently)."""

    random = True

    def __init__(self, scaler: ResizeStepScaling, cropper: RandomPaddingCrop) -> None:
        self.scaler = scaler
        self.cropper = cropper

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        scaler, cropper = self.scaler, self.cropper
        rng = scaler._need_rng(rng)
        img = scaler._image(sample)
        h, w = img.shape[:2]
        size = F.scaled_size(h, w, scaler.draw_scale(rng))
        top, left = cropper.draw_offsets(size[0], size[1], rng)
        crop_w, crop_h = cropper.crop_size
        # The part of the window inside the scaled image; the rest is bottom/right padding.
        inside_h, inside_w = min(crop_h, size[0] - top), min(crop_w, size[1] - left)
        out = dict(sample)
        _record(out, "resize", (h, w))
        window = F.resize_linear_window(img, size, top, left, inside_h, inside_w)
        if (inside_h, inside_w) != (crop_h, crop_w):
            window = F.promote_for_padding(window, cropper.im_padding_value)
        out["img"] = F.crop_with_padding(window, 0, 0, crop_h, crop_w,
                                         cropper.im_padding_value)
        for key in scaler._masks(sample):
            value = cropper.label_padding_value if key == "label" else _FOV_PADDING
            part = F.resize_nearest_window(sample[key], size, top, left, inside_h, inside_w)
            out[key] = F.crop_with_padding(part, 0, 0, crop_h, crop_w, value)
        return out

    def __repr__(self) -> str:
        return f"_ScaleThenCrop({self.scaler!r}, {self.cropper!r})"


def _fuse(transforms: Sequence[Callable]) -> List[Callable]:
    """The pipeline with each ResizeStepScaling -> RandomPaddingCrop pair fused."""
    steps: List[Callable] = []
    i = 0
    while i < len(transforms):
        t = transforms[i]
        nxt = transforms[i + 1] if i + 1 < len(transforms) else None
        if type(t) is ResizeStepScaling and type(nxt) is RandomPaddingCrop:
            steps.append(_ScaleThenCrop(t, nxt))
            i += 2
        else:
            steps.append(t)
            i += 1
    return steps


@TRANSFORMS.register()
class Compose(_Transform):
    """Apply transforms in order, then turn 'img' into a contiguous CxHxW float32 array
    (values unchanged if no Normalize ran). ``transforms`` holds transform instances or
    spec dicts (``{'type': 'RandomPaddingCrop', 'crop_size': [128, 128]}``).

    Samples arrive RGB (the datasets decode to RGB). ``to_rgb`` exists for PaddleSeg
    configs: True (the default) keeps RGB; False feeds the network BGR, as PaddleSeg's
    ``to_rgb: False`` does.

    With ``fuse`` (default) a ResizeStepScaling directly followed by a RandomPaddingCrop
    runs as one step that scales only the crop window: same random draws, labels and
    trans_info, image pixels within one grey level of the unfused result.
    """

    def __init__(self, transforms: Sequence[Union[Callable, Dict[str, Any]]],
                 to_rgb: bool = True, fuse: bool = True) -> None:
        if not isinstance(transforms, (list, tuple)):
            raise ValueError(f"Compose: transforms must be a list, got "
                             f"{type(transforms).__name__}")
        if not isinstance(to_rgb, bool):
            raise ValueError(f"Compose: to_rgb must be true or false, got {to_rgb!r}")
        built = []
        for i, t in enumerate(transforms):
            if isinstance(t, dict):
                t = build(t, TRANSFORMS, where=f"Compose.transforms[{i}]")
            if not callable(t):
                raise ValueError(f"Compose: transforms[{i}] is neither a transform nor a "
                                 f"spec dict with a 'type', got {t!r}")
            built.append(t)
        if not isinstance(fuse, bool):
            raise ValueError(f"Compose: fuse must be true or false, got {fuse!r}")
        self.transforms = built
        self.to_rgb = to_rgb
        self.fuse = fuse
        self._steps = _fuse(built) if fuse else list(built)

    @property
    def random(self) -> bool:  # type: ignore[override]
        return any(getattr(t, "random", True) for t in self.transforms)

    def __call__(self, sample: Sample, rng: Optional[np.random.Generator] = None) -> Sample:
        if not isinstance(sample, dict):
            raise TypeError(f"Compose: a sample is a dict with an 'img' array, got "
                            f"{type(sample).__name__}")
        out = dict(sample)
        img = self._image(out)
        h, w = img.shape[:2]
        for key in _MASK_KEYS:
            mask = out.get(key)
            if mask is not None and (not isinstance(mask, np.ndarray)
                                     or mask.shape[:2] != (h, w) or mask.ndim != 2):
                shape = getattr(mask, "shape", type(mask).__name__)
                raise ValueError(
                    f"Compose: sample '{key}' must be an HxW array matching the image "
                    f"{w}x{h} (w x h) of {out.get('img_path', '<in memory>')}, got {shape}"
                    + (f" from {out['label_path']}" if key == "label" and
                       out.get("label_path") else ""))
        out["trans_info"] = list(out.get("trans_info") or [])
        if not self.to_rgb:
            out["img"] = img[..., ::-1]
        for step in self._steps:
            out = step(out, rng)
        out["img"] = F.to_chw_float32(out["img"])
        for key in _MASK_KEYS:
            if out.get(key) is not None:
                out[key] = np.ascontiguousarray(out[key])
        return out

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}], to_rgb={self.to_rgb}, fuse={self.fuse})"
