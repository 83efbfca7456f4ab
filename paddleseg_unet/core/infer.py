"""Inference: whole image, batched sliding window, flip/multi-scale, and undoing trans_info.

Everything is built around a backend-agnostic ``forward(x) -> logits`` callable
(``x``: ``[B, C, h, w]`` paddle tensor, result: ``[B, K, h', w']`` paddle tensor), so a
paddle model, a static-graph predictor or an ONNX session can share the same window
placement, accumulation and test-time augmentation.  :func:`as_forward` builds that
callable; the public functions accept either a model or such a callable and wrap it.

The model must already be in eval mode (the caller decides); gradients are disabled here.
Sizes follow PaddleSeg: ``crop_size`` and ``stride`` are ``(w, h)``; shapes are ``(h, w)``.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import paddle
import paddle.nn.functional as F

from paddleseg_unet.utils.device import cpu_threads_split, current_cpu_threads

__all__ = [
    "InferenceError",
    "InferenceOptions",
    "Forward",
    "as_forward",
    "slide_windows",
    "slide_inference",
    "slide_workers_for",
    "available_memory_bytes",
    "default_slide_budget",
    "activation_bytes_per_pixel",
    "slide_plan",
    "undo_trans_info",
    "flip_combinations",
    "inference",
    "aug_inference",
]

Forward = Callable[[paddle.Tensor], paddle.Tensor]
Window = Tuple[int, int, int, int]
TransInfo = Sequence[Tuple[str, Tuple[int, int]]]


class InferenceError(ValueError):
    """Invalid inference arguments (window sizes, trans_info entries, model output)."""


def as_forward(model: Callable[..., Any], numpy_io: bool = False) -> Forward:
    """Wrap ``model`` into ``forward(x: paddle.Tensor) -> paddle.Tensor`` (4-D logits).

    PaddleSeg models return a list of logits (the first is the prediction); a bare tensor
    or numpy array is accepted too. With ``numpy_io=True`` the input is handed over as a
    numpy array, for backends such as onnxruntime that do not take paddle tensors.
    Wrapping an already wrapped callable is harmless.
    """

    def forward(x: paddle.Tensor) -> paddle.Tensor:
        out = model(x.numpy() if numpy_io else x)
        if isinstance(out, (list, tuple)):
            if not out:
                raise InferenceError("the model returned an empty list; expected [logits, ...]")
            out = out[0]
        if isinstance(out, np.ndarray):
            out = paddle.to_tensor(out)
        if not isinstance(out, paddle.Tensor) or out.ndim != 4:
            raise InferenceError(
                f"the model must return logits of shape [N, K, H, W] (or a list whose first "
                f"item is that); got {type(out).__name__} "
                f"{getattr(out, 'shape', '')}")
        if int(out.shape[0]) != int(x.shape[0]):
            raise InferenceError(
                f"the model returned {out.shape[0]} logit maps for a batch of {x.shape[0]}")
        return out

    # Several threads may call an eager paddle model at once (sliding windows on a CPU);
    # exported-model backends such as a Paddle Inference predictor must not be shared.
    forward.concurrent_ok = isinstance(model, paddle.nn.Layer) or getattr(model, "concurrent_ok", False)
    # What per-model measurements (activation_bytes_per_pixel) are cached on.
    forward.owner = getattr(model, "owner", model)
    return forward


def _pair(value: Any, name: str) -> Tuple[int, int]:
    """Validate a (a, b) pair of positive ints (an int means (v, v))."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    try:
        a, b = value
        pair = (int(a), int(b))
    except (TypeError, ValueError):
        raise InferenceError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if pair[0] != a or pair[1] != b or min(pair) <= 0:
        raise InferenceError(f"{name} must be positive integers, got {value!r}")
    return pair


AVERAGES = ("logit", "prob")
SLIDE_WEIGHTS = ("uniform", "gaussian")
GAUSSIAN_SIGMA = 1 / 8  # of the window size, per axis (nnU-Net's choice)


@dataclass(frozen=True)
class InferenceOptions:
    """How one image is inferred, passed whole from the flags to every inference function.

    ``scales`` and the flips are test-time augmentation (averaged; ``average`` ``logit``
    is PaddleSeg's mean of raw logits, ``prob`` MMSegmentation's mean of probabilities);
    ``is_slide`` runs ``crop_size`` windows (w, h) every ``stride`` (w, h), at most
    ``slide_batch`` windows per forward call (None: as many as the memory budget allows, up
    to :data:`SLIDE_BATCH_MAX`), within ``slide_memory_gb`` GB of activations and sums (None:
    :func:`default_slide_budget`); ``slide_weight`` blends overlapping windows with equal weights
    (``uniform``, PaddleSeg's mean) or with a Gaussian centred on each window (``gaussian``,
    as nnU-Net and MONAI: the centre of a window counts more than its border, which removes
    tile seams). The defaults are plain whole-image inference.
    """

    scales: Tuple[float, ...] = (1.0,)
    flip_horizontal: bool = False
    flip_vertical: bool = False
    is_slide: bool = False
    crop_size: Optional[Tuple[int, int]] = None
    stride: Optional[Tuple[int, int]] = None
    slide_batch: Optional[int] = None
    average: str = "logit"
    slide_weight: str = "uniform"
    slide_memory_gb: Optional[float] = None

    def __post_init__(self) -> None:
        scales = self.scales
        scales = [scales] if isinstance(scales, (int, float)) else list(scales)
        if not scales or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                 and s > 0 for s in scales):
            raise InferenceError(f"scales must be positive numbers, got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))
        if self.average not in AVERAGES:
            raise InferenceError(f"average must be 'logit' or 'prob', got {self.average!r}")
        if self.slide_weight not in SLIDE_WEIGHTS:
            raise InferenceError(f"slide_weight must be 'uniform' or 'gaussian', "
                                 f"got {self.slide_weight!r}")
        for name in ("crop_size", "stride"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _pair(value, name))
        if self.is_slide and (self.crop_size is None or self.stride is None):
            raise InferenceError("sliding-window inference (is_slide) needs crop_size and "
                                 "stride, both (w, h): --crop_size W H --stride W H, or "
                                 "test_config.crop_size / stride in the config")
        if self.slide_batch is not None and (
                isinstance(self.slide_batch, bool) or not isinstance(self.slide_batch, int)
                or self.slide_batch < 1):
            raise InferenceError(f"slide_batch must be a positive integer, "
                                 f"got {self.slide_batch!r}")
        memory = self.slide_memory_gb
        if memory is not None and (isinstance(memory, bool) or not isinstance(
                memory, (int, float)) or not math.isfinite(memory) or memory <= 0):
            raise InferenceError(f"slide_memory_gb must be a positive number of GB, "
                                 f"got {memory!r}")

    @property
    def slide_memory_bytes(self) -> Optional[int]:
        return None if self.slide_memory_gb is None else int(self.slide_memory_gb * 1024 ** 3)

    @classmethod
    def build(cls, test_config: Optional[Mapping[str, Any]] = None,
              aug: Optional[bool] = None, **flags: Any) -> "InferenceOptions":
        """From a config's ``test_config`` with the given flags on top (a flag that is None
        is not given). ``aug`` (``--aug_eval`` / ``test_config.aug_eval``) off means one
        scale of 1.0 and no flips, whatever the scales and flips say."""
        merged: Dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for source in (dict(test_config or {}), flags):
            for key, value in source.items():
                if key == "aug_average":
                    key = "average"
                if key in names and value is not None:
                    merged[key] = value
        if aug is None:
            aug = bool((test_config or {}).get("aug_eval", False))
        if not aug:
            merged.update(scales=(1.0,), flip_horizontal=False, flip_vertical=False)
        return cls(**merged)

    @property
    def augmented(self) -> bool:
        return self.scales != (1.0,) or self.flip_horizontal or self.flip_vertical

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PLAIN = InferenceOptions()


def _axis_spans(size: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    """Window spans along one axis: PaddleSeg's placement, last window flush with the border."""
    n = 1 if size <= crop else math.ceil((size - crop) / stride) + 1
    spans = []
    for i in range(n):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def slide_windows(h: int, w: int, crop_hw: Tuple[int, int],
                  stride_hw: Tuple[int, int]) -> List[Window]:
    """Sliding windows ``(y0, y1, x0, x1)`` for an ``h x w`` image, rows then columns.

    ``crop_hw`` and ``stride_hw`` are ``(height, width)`` here (note: not PaddleSeg's (w, h)).
    Per axis: ``ceil((H - h) / sh) + 1`` windows (1 if ``H <= h``); window ``r`` ends at
    ``min(r*sh + h, H)`` and starts at ``max(end - h, 0)``.
    """
    h, w = _pair((h, w), "image size")
    ch, cw = _pair(crop_hw, "crop size")
    sh, sw = _pair(stride_hw, "stride")
    return [(y0, y1, x0, x1)
            for y0, y1 in _axis_spans(h, ch, sh)
            for x0, x1 in _axis_spans(w, cw, sw)]


def gaussian_profile(length: int) -> np.ndarray:
    """A window's weights along one axis: ``exp(-d^2 / (2 s^2))`` with ``d`` the distance
    of the pixel centre from the window centre and ``s = length / 8``; peak 1."""
    d = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
    sigma = max(length * GAUSSIAN_SIGMA, 1e-6)
    return np.exp(-(d ** 2) / (2.0 * sigma ** 2))


def _axis_weights(size: int, crop: int, stride: int, weight: str = "uniform"
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(weights of one window along the axis, their sum over all windows per pixel). Every
    window along an axis has the same length, min(crop, size)."""
    length = min(crop, size)
    profile = (gaussian_profile(length) if weight == "gaussian"
               else np.ones(length)).astype(np.float32)
    cover = np.zeros(size, dtype=np.float32)
    for a0, a1 in _axis_spans(size, crop, stride):
        cover[a0:a1] += profile
    return profile, cover


def slide_workers_for(forward: Forward, num_calls: int) -> int:
    """How many threads should run window batches: on a CPU, one per Paddle CPU thread (each
    then runs its batches on one thread) when the forward is an eager paddle model. Paddle's
    CPU kernels scale poorly inside one call, so two calls side by side finish sooner than
    two threads sharing one call; on a GPU one stream of batched calls is best."""
    if not getattr(forward, "concurrent_ok", False) or not paddle.get_device().startswith("cpu"):
        return 1
    return max(1, min(current_cpu_threads(), num_calls))


SLIDE_BATCH_MAX = 8  # windows per forward call when the budget and --slide_batch allow
# The default budget: a share of the memory free when the image starts (other processes, the
# loader and the rest of this one need the remainder), and never more than a fixed amount,
# so that big windows (584 px HRF crops at full width: ~2 GB each) run one at a time as in
# PaddleSeg, while the small windows that gain most from batching still get all of it.
DEFAULT_BUDGET_FRACTION = 0.25
DEFAULT_BUDGET_CAP = 2 * 1024 ** 3
PROBE_SIZE = 64  # side of the probe input that measures a model's activation bytes per pixel


def available_memory_bytes() -> Optional[int]:
    """Memory a new allocation can get without swapping: ``MemAvailable`` of /proc/meminfo
    on Linux, else the free physical pages (``os.sysconf``), else None (unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def default_slide_budget() -> int:
    """Bytes that sliding windows may use when no budget is given: DEFAULT_BUDGET_FRACTION
    of :func:`available_memory_bytes`, at most DEFAULT_BUDGET_CAP; 0 (one window at a
    time, PaddleSeg's footprint) when the free memory is unknown."""
    available = available_memory_bytes()
    if available is None:
        return 0
    return int(min(DEFAULT_BUDGET_FRACTION * available, DEFAULT_BUDGET_CAP))


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_bytes_of(run: Callable[[], Any]) -> Optional[int]:
    """The memory ``run()`` needs at its peak above what was in use before: Paddle's own
    count of allocated host bytes (exact for paddle tensors); for a backend that allocates
    outside Paddle (onnxruntime, Paddle Inference), the growth of the resident set, which
    their arena allocators keep after the call. None when neither can be read."""
    core = paddle.base.core
    try:
        core.host_memory_stat_reset_peak_value("Allocated", 0)
        before = core.host_memory_stat_current_value("Allocated", 0)
    except (AttributeError, RuntimeError, ValueError):
        before = None
    rss_before = _status_kb("VmRSS")
    run()
    known = []
    if before is not None:
        known.append(core.host_memory_stat_peak_value("Allocated", 0) - before)
    rss_after = _status_kb("VmRSS")
    if rss_before is not None and rss_after is not None:
        known.append((rss_after - rss_before) * 1024)
    return max(known) if known else None


def activation_bytes_per_pixel(forward: Forward, channels: int, dtype: Any,
                               probe_hw: Tuple[int, int] = (PROBE_SIZE, PROBE_SIZE)
                               ) -> Optional[float]:
    """Peak memory of one forward call per input pixel (one image), measured once by a
    forward of zeros ``[1, channels, *probe_hw]`` and cached on the model (per channels and
    dtype). A model's activations grow with the pixels, so the per-pixel cost of a small
    probe carries over to big windows (measured on UNet: the same 6184 B/px from 32 to 256
    px). None when it cannot be measured (the probe failed or nothing is readable)."""
    owner = getattr(forward, "owner", forward)
    key = (int(channels), str(dtype), tuple(probe_hw))
    cache = getattr(owner, "_slide_bytes_per_pixel", None)
    if isinstance(cache, dict) and key in cache:
        return cache[key]
    probe = paddle.zeros([1, int(channels), *probe_hw], dtype=dtype)
    try:
        with paddle.no_grad():
            peak = _peak_bytes_of(lambda: forward(probe))
    except Exception:  # noqa: BLE001 - a model that refuses the probe is run the safe way
        peak = None
    value = None if peak is None else max(float(peak), 0.0) / (probe_hw[0] * probe_hw[1])
    try:
        if not isinstance(cache, dict):
            cache = {}
            setattr(owner, "_slide_bytes_per_pixel", cache)
        cache[key] = value
    except (AttributeError, TypeError):  # an object that takes no attributes: measure again
        pass
    return value


def slide_plan(window_bytes: float, accumulator_bytes: float, budget_bytes: float,
               num_windows: int, max_windows_per_call: int, max_workers: int,
               fixed_workers: bool = False) -> Tuple[int, int]:
    """``(windows per forward call, worker threads)`` whose estimated peak, ``workers *
    (windows * window_bytes + accumulator_bytes)``, fits ``budget_bytes``. Threads come
    first (on a CPU two calls side by side gain more than bigger calls; ``fixed_workers``
    keeps ``max_workers``), then windows per call, never more than ``max_*`` nor than the
    windows need; at least one window and one thread, which is what one-window-at-a-time
    inference (PaddleSeg's) needs anyway."""
    def fits(windows: int, workers: int) -> bool:
        return workers * (windows * window_bytes + accumulator_bytes) <= budget_bytes

    workers = max(1, min(int(max_workers), int(num_windows)))
    while workers > 1 and not fixed_workers and not fits(1, workers):
        workers -= 1
    windows = max(1, min(int(max_windows_per_call), math.ceil(num_windows / workers)))
    while windows > 1 and not fits(windows, workers):
        windows -= 1
    return windows, workers


def _budgeted(forward: Forward, img: paddle.Tensor, crop_hw: Tuple[int, int],
              windows: List[Window], per_call: int, workers: Optional[int],
              memory_budget: Optional[int]) -> Tuple[int, Optional[int]]:
    """Windows per call and threads of :func:`slide_inference` within the memory budget
    (a ``workers`` given by the caller is kept)."""
    n, c, h, w = (int(s) for s in img.shape)
    probe_hw = (min(crop_hw[0], PROBE_SIZE), min(crop_hw[1], PROBE_SIZE))
    per_pixel = activation_bytes_per_pixel(forward, c, img.dtype, probe_hw)
    if per_pixel is None:
        return 1, workers if workers is not None else 1  # unknown cost: PaddleSeg's way
    budget = default_slide_budget() if memory_budget is None else memory_budget
    window_bytes = per_pixel * n * crop_hw[0] * crop_hw[1]
    # Each thread keeps a float32 sum of the logits over the image (2 classes assumed at
    # least; a larger model output is part of its activations anyway).
    accumulator_bytes = 4.0 * n * 2 * h * w
    max_workers = workers if workers is not None else slide_workers_for(forward, len(windows))
    return slide_plan(window_bytes, accumulator_bytes, budget, len(windows), per_call,
                      max_workers, fixed_workers=workers is not None)


@paddle.no_grad()
def slide_inference(model: Callable[..., Any], img: paddle.Tensor,
                    crop_size: Tuple[int, int], stride: Tuple[int, int],
                    slide_batch: Optional[int] = None, workers: Optional[int] = None,
                    weight: str = "uniform", memory_budget: Optional[int] = None
                    ) -> paddle.Tensor:
    """Sliding-window logits ``[N, K, H, W]`` (float32), overlapping windows averaged
    (``weight`` ``uniform``) or blended with a Gaussian per window (``gaussian``: weights
    ``g(y) g(x)``, :func:`gaussian_profile`, divided by their sum at each pixel).

    ``crop_size`` / ``stride`` are ``(w, h)``. Windows are batched: each forward call gets
    up to ``slide_batch`` crops in total (``N`` per window, so ``max(1, slide_batch // N)``
    windows; None: up to SLIDE_BATCH_MAX windows). Sums and counts stay on the device; the
    count is the outer product of the per-axis coverages because the windows form a grid.
    ``workers`` threads run the calls side by side (default :func:`slide_workers_for`);
    batch ``i`` always goes to thread ``i % workers`` and the per-thread sums are added in
    thread order, so results repeat, whatever the batching.

    On a CPU, windows per call and threads (those not given) follow ``memory_budget`` bytes
    (default :func:`default_slide_budget`): the model's activation bytes per pixel are
    measured once (:func:`activation_bytes_per_pixel`) and :func:`slide_plan` picks the
    largest batching whose estimate fits. On a GPU the given or default batch is used.
    """
    forward = as_forward(model)
    cw, ch = _pair(crop_size, "crop_size (w, h)")
    sw, sh = _pair(stride, "stride (w, h)")
    if slide_batch is not None and (not isinstance(slide_batch, (int, np.integer))
                                    or slide_batch < 1):
        raise InferenceError(f"slide_batch must be a positive int, got {slide_batch!r}")
    if img.ndim != 4:
        raise InferenceError(f"image tensor must be [N, C, H, W], got shape {list(img.shape)}")
    n, _, h, w = (int(s) for s in img.shape)
    if weight not in SLIDE_WEIGHTS:
        raise InferenceError(f"slide weight must be 'uniform' or 'gaussian', got {weight!r}")
    (row_w, rows), (col_w, cols) = (_axis_weights(h, ch, sh, weight),
                                    _axis_weights(w, cw, sw, weight))
    # The windows form a grid of equal-sized windows and a window's weights are separable,
    # so the per-pixel weight sum is the outer product of the per-axis sums.
    window_weight = None if weight == "uniform" else paddle.to_tensor(
        np.outer(row_w, col_w)[None, None].astype(np.float32))
    if rows.min() == 0 or cols.min() == 0:
        raise InferenceError(
            f"stride {(sw, sh)} is larger than crop_size {(cw, ch)} (w, h): some pixels of the "
            f"{w}x{h} image fall in no window; use a stride <= crop_size")
    windows = slide_windows(h, w, (ch, cw), (sh, sw))
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise InferenceError(f"slide workers must be a positive int, got {workers!r}")
    per_call = SLIDE_BATCH_MAX if slide_batch is None else max(1, int(slide_batch) // n)
    if paddle.get_device().startswith("cpu"):
        per_call, workers = _budgeted(forward, img, (ch, cw), windows, per_call, workers,
                                      memory_budget)
    calls = [windows[start:start + per_call] for start in range(0, len(windows), per_call)]
    if workers is None:
        workers = slide_workers_for(forward, len(calls))
    workers = min(int(workers), len(calls))  # a thread without calls would only hold a share

    def run(my_calls: List[List[Window]]) -> Optional[paddle.Tensor]:
        total = None
        with paddle.no_grad():  # grad mode is per thread in Paddle
            for chunk in my_calls:
                crops = [img[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in chunk]
                batch = crops[0] if len(crops) == 1 else paddle.concat(crops, axis=0)
                logits = forward(batch).astype("float32")
                if total is None:
                    total = paddle.zeros([n, int(logits.shape[1]), h, w], dtype="float32")
                for i, (y0, y1, x0, x1) in enumerate(chunk):
                    # A model may return a map larger than its input; keep the top-left part.
                    part = logits[i * n:(i + 1) * n, :, :y1 - y0, :x1 - x0]
                    if window_weight is not None:
                        part = part * window_weight
                    total[:, :, y0:y1, x0:x1] += part
        return total

    if workers == 1:
        total = run(calls)
    else:
        with cpu_threads_split(workers), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, [calls[i::workers] for i in range(workers)]))
        total = parts[0]
        for part in parts[1:]:
            total = total + part
    count = paddle.to_tensor(np.outer(rows, cols)[None, None])
    return total / count


def _trans_entry(item: Any, index: int) -> Tuple[str, int, int]:
    try:
        op, size = item
        op = str(op)
        th, tw = (int(v) for v in np.asarray(size).reshape(-1).tolist())
    except (TypeError, ValueError):
        raise InferenceError(
            f"trans_info entry #{index} is {item!r}; expected ('resize' or 'padding', (h, w))"
        ) from None
    if op not in ("resize", "padding") or th <= 0 or tw <= 0:
        raise InferenceError(
            f"trans_info entry #{index} is {item!r}; expected ('resize' or 'padding', (h, w)) "
            f"with a positive size")
    return op, th, tw


def _resize(x: paddle.Tensor, hw: Tuple[int, int]) -> paddle.Tensor:
    """Bilinear resize (align_corners False); a no-op when the size already matches."""
    if (int(x.shape[-2]), int(x.shape[-1])) == tuple(hw):
        return x
    return F.interpolate(x, size=list(hw), mode="bilinear", align_corners=False)


def undo_trans_info(logits: paddle.Tensor, trans_info: Optional[TransInfo]) -> paddle.Tensor:
    """Map logits back through the recorded size changes, last op first.

    ``('resize', (h, w))`` -> bilinear resize to ``(h, w)``; ``('padding', (h, w))`` -> keep
    ``[:h, :w]`` (transforms pad bottom/right).
    """
    if not trans_info:
        return logits
    entries = [_trans_entry(item, i) for i, item in enumerate(trans_info)]
    for op, th, tw in reversed(entries):
        if op == "resize":
            logits = _resize(logits, (th, tw))
        else:
            cur_h, cur_w = int(logits.shape[-2]), int(logits.shape[-1])
            if th > cur_h or tw > cur_w:
                raise InferenceError(
                    f"trans_info says padding started from {th}x{tw} (h x w) but the logits "
                    f"are only {cur_h}x{cur_w}; the recorded trans_info does not match the "
                    f"transforms that were applied")
            logits = logits[:, :, :th, :tw]
    return logits


def _finish(logits: paddle.Tensor, trans_info: Optional[TransInfo],
            ori_shape: Optional[Tuple[int, int]]) -> paddle.Tensor:
    logits = undo_trans_info(logits, trans_info)
    if ori_shape is not None:
        # Evaluation scores at the label's original size, so a size left over by a
        # transform that recorded nothing is resized away (bilinear, as for ResizeByLong).
        logits = _resize(logits, _pair(tuple(ori_shape)[:2], "ori_shape (h, w)"))
    return logits


def _infer_logits(forward: Forward, img: paddle.Tensor, options: InferenceOptions
                  ) -> paddle.Tensor:
    if not options.is_slide:
        return forward(img)
    return slide_inference(forward, img, options.crop_size, options.stride,
                           options.slide_batch, weight=options.slide_weight,
                           memory_budget=options.slide_memory_bytes)


@paddle.no_grad()
def inference(model: Callable[..., Any], img: paddle.Tensor,
              options: Optional[InferenceOptions] = None,
              trans_info: Optional[TransInfo] = None,
              ori_shape: Optional[Tuple[int, int]] = None) -> paddle.Tensor:
    """Logits ``[N, K, H', W']`` for a normalized image batch ``[N, C, H, W]``.

    Whole image, or sliding windows when ``options.is_slide`` (the augmentation fields are
    not used here: see :func:`aug_inference`). ``trans_info`` (one list for the whole
    batch) is undone in reverse order; if ``ori_shape`` (h, w) is given and the result
    still differs, it is resized to it.
    """
    forward = as_forward(model)
    logits = _infer_logits(forward, img, options or PLAIN)
    return _finish(logits, trans_info, ori_shape)


def flip_combinations(flip_horizontal: bool = False,
                      flip_vertical: bool = False) -> List[Tuple[bool, bool]]:
    """``(horizontal, vertical)`` flips to run: none, +h, +v, +both (when both asked)."""
    combos = [(False, False)]
    if flip_horizontal:
        combos.append((True, False))
    if flip_vertical:
        combos.append((False, True))
    if flip_horizontal and flip_vertical:
        combos.append((True, True))
    return combos


def _flip(x: paddle.Tensor, flip: Tuple[bool, bool]) -> paddle.Tensor:
    axes = ([3] if flip[0] else []) + ([2] if flip[1] else [])
    return paddle.flip(x, axis=axes) if axes else x


@paddle.no_grad()
def aug_inference(model: Callable[..., Any], img: paddle.Tensor,
                  options: Optional[InferenceOptions] = None,
                  trans_info: Optional[TransInfo] = None,
                  ori_shape: Optional[Tuple[int, int]] = None) -> paddle.Tensor:
    """Flip / multi-scale test-time augmentation, averaged, then mapped back via trans_info.

    For each scale ``s`` the ORIGINAL input is resized bilinearly to
    ``int(s*H + 0.5) x int(s*W + 0.5)`` (PaddleSeg's rounding); for each flip of
    :func:`flip_combinations` it is flipped, inferred (sliding if ``is_slide``), flipped
    back and resized to ``H x W``.

    ``average='logit'`` (the compat contract) returns the mean of the raw logits.
    ``average='prob'`` (MMSegmentation's choice) averages the softmax probabilities and
    returns their logarithm: still logits for every consumer (softmax of the result gives
    back the averaged probabilities, argmax is the prediction), so metrics and saved
    probabilities are right whichever average was used.
    """
    options = options or PLAIN
    forward = as_forward(model)
    h, w = int(img.shape[-2]), int(img.shape[-1])
    total, count = None, 0
    for s in options.scales:
        scaled = _resize(img, (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))))
        for flip in flip_combinations(options.flip_horizontal, options.flip_vertical):
            logits = _infer_logits(forward, _flip(scaled, flip), options)
            logits = _resize(_flip(logits.astype("float32"), flip), (h, w))
            if options.average == "prob":
                logits = F.softmax(logits, axis=1)
            total = logits if total is None else total + logits
            count += 1
    mean = total / count
    if options.average == "prob":
        mean = paddle.log(paddle.clip(mean, min=1e-30))
    return _finish(mean, trans_info, ori_shape)
