"""Benchmark: batched sliding-window inference versus one window at a time.

One HRF-sized image (2336 x 3504 by default), crop 256, stride 170, a small-width UNet.
The baseline is PaddleSeg's way: one window per forward call, logits copied to the host
and accumulated in float64 numpy sum/count arrays. The candidate is
``paddleseg_unet.core.infer.inference(is_slide=True)``: several windows per forward call,
sums kept on the device, and on a CPU as many calls side by side as there are CPU threads
(one thread each; see ``slide_workers_for``). Both run in this process on the same model
and image; the script prints both times, their ratio and the largest difference between
the two results.

    python benchmarks/slide_infer.py [--base-channels 8] [--slide-batch 8] [--repeat 1]
"""

import argparse
import os
import sys
import time
from typing import Callable, List, Tuple

# Threads must be fixed before paddle is imported (its OpenMP pool reads the variable once).
try:
    _CORES = len(os.sched_getaffinity(0))
except AttributeError:  # not Linux
    _CORES = os.cpu_count() or 1
os.environ.setdefault("OMP_NUM_THREADS", str(_CORES))

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from paddleseg_unet.core.infer import (InferenceOptions, as_forward, inference,  # noqa: E402
                                       slide_windows, slide_workers_for)
from paddleseg_unet.utils.device import set_cpu_threads  # noqa: E402


class FallbackNet(nn.Layer):
    """Used only when paddleseg_unet.models.unet cannot be imported: a plain conv stack."""

    def __init__(self, num_classes: int, base_channels: int) -> None:
        super().__init__()
        b = base_channels
        self.body = nn.Sequential(nn.Conv2D(3, b, 3, padding=1), nn.ReLU(),
                                  nn.Conv2D(b, b, 3, padding=1), nn.ReLU(),
                                  nn.Conv2D(b, num_classes, 3, padding=1))

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        return [self.body(x)]


def build_model(num_classes: int, base_channels: int) -> Tuple[nn.Layer, str]:
    try:
        from paddleseg_unet.models.unet import UNet
    except ImportError as exc:
        return FallbackNet(num_classes, base_channels), f"FallbackNet (UNet not importable: {exc})"
    return UNet(num_classes=num_classes, base_channels=base_channels), "paddleseg_unet UNet"


@paddle.no_grad()
def one_window_at_a_time(model: Callable, img: paddle.Tensor, crop_wh: Tuple[int, int],
                         stride_wh: Tuple[int, int]) -> np.ndarray:
    """PaddleSeg-style baseline: per-window forward, host float64 accumulators."""
    _, _, h, w = img.shape
    windows = slide_windows(h, w, (crop_wh[1], crop_wh[0]), (stride_wh[1], stride_wh[0]))
    total, count = None, np.zeros([1, 1, h, w])
    for y0, y1, x0, x1 in windows:
        logit = model(img[:, :, y0:y1, x0:x1])[0].numpy()
        if total is None:
            total = np.zeros([1, logit.shape[1], h, w])
        total[:, :, y0:y1, x0:x1] += logit[:, :, :y1 - y0, :x1 - x0]
        count[:, :, y0:y1, x0:x1] += 1
    return total / count


def _timed(fn: Callable[[], np.ndarray]) -> Tuple[np.ndarray, List[float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, [time.perf_counter() - wall, time.process_time() - cpu]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=2336)
    parser.add_argument("--width", type=int, default=3504)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--stride", type=int, default=170)
    parser.add_argument("--slide-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs of each method (alternating); the best is kept")
    args = parser.parse_args(argv)

    set_cpu_threads(_CORES)
    paddle.seed(0)
    model, model_name = build_model(args.num_classes, args.base_channels)
    model.eval()
    img = paddle.to_tensor(np.random.default_rng(0).uniform(
        -1, 1, (1, 3, args.height, args.width)).astype("float32"))
    crop, stride = (args.crop, args.crop), (args.stride, args.stride)
    n_windows = len(slide_windows(args.height, args.width, crop, stride))
    workers = slide_workers_for(as_forward(model), -(-n_windows // args.slide_batch))
    print(f"model: {model_name}, base_channels {args.base_channels}; image "
          f"{args.height}x{args.width}; crop {args.crop} stride {args.stride}: "
          f"{n_windows} windows; {_CORES} CPU threads; batched arm: {workers} concurrent "
          f"calls of {max(1, _CORES // workers)} thread(s) each")

    with paddle.no_grad():  # warm-up: first calls allocate and pick kernels
        for b in {1, args.slide_batch}:
            model(paddle.zeros([b, 3, args.crop, args.crop]))

    # Wall time is what users wait for; process CPU time is less distorted when other
    # processes share the cores. Best of --repeat runs, methods alternating.
    base_t, batched_t = [float("inf")] * 2, [float("inf")] * 2
    for _ in range(args.repeat):
        base, t = _timed(lambda: one_window_at_a_time(model, img, crop, stride))
        base_t = [min(a, b) for a, b in zip(base_t, t)]
        batched, t = _timed(lambda: inference(model, img, InferenceOptions(
            is_slide=True, crop_size=crop, stride=stride, slide_batch=args.slide_batch)).numpy())
        batched_t = [min(a, b) for a, b in zip(batched_t, t)]

    diff = float(np.abs(batched - base).max())
    batched_name = f"batched x{args.slide_batch}, {workers} workers (device sums)"
    for name, (wall, cpu) in [("one window at a time (numpy accumulator)", base_t),
                              (batched_name, batched_t)]:
        print(f"{name:42s} wall {wall:8.2f} s ({1000 * wall / n_windows:4.0f} ms/window), "
              f"CPU {cpu:8.2f} s")
    print(f"speed-up: wall {base_t[0] / batched_t[0]:.2f}x, CPU {base_t[1] / batched_t[1]:.2f}x; "
          f"max |difference| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
