"""oneDNN convolutions (paddleseg_unet.utils.onednn) versus Paddle's eager CPU convolution.

Two measurements, in one process, arms alternated in rounds (the order flipping between
rounds), the figure being the median over rounds of Paddle-time / oneDNN-time:

* per layer: forward + backward (input and weight gradients) of every distinct 3x3
  convolution of a UNet forward at ``--width`` (64 = PaddleSeg's UNet), batch ``--batch``,
  ``--size`` px: ``paddle.nn.functional.conv2d`` against ``onednn.conv2d``;
* training step: forward, cross-entropy, backward and Adam step of the whole UNet, the same
  model and batch, with ``PADDLESEG_UNET_ONEDNN`` 0 (Paddle's conv) against 1, at each of
  ``--widths``.

    python benchmarks/onednn_conv.py [--width 64] [--widths 64 16] [--rounds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

from paddleseg_unet.models.unet import UNet  # noqa: E402
from paddleseg_unet.utils import onednn  # noqa: E402
from paddleseg_unet.utils.device import set_cpu_threads  # noqa: E402


def timed(fn: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def unet_conv_shapes(width: int, batch: int, size: int) -> List[Tuple[tuple, tuple]]:
    """(input shape, weight shape) of each distinct convolution a UNet forward makes."""
    seen: List[Tuple[tuple, tuple]] = []
    original = onednn.conv2d

    def record(x, weight, *args, **kwargs):
        key = (tuple(x.shape), tuple(weight.shape))
        if key not in seen:
            seen.append(key)
        return original(x, weight, *args, **kwargs)

    onednn.conv2d = record
    try:
        with paddle.no_grad():
            UNet(num_classes=2, base_channels=width)(paddle.zeros([batch, 3, size, size]))
    finally:
        onednn.conv2d = original
    return seen


def alternate(arms: Dict[str, Callable[[], None]], rounds: int, steps: int
              ) -> Dict[str, List[float]]:
    for fn in arms.values():
        fn()  # warm-up: plans built, buffers cached
    times: Dict[str, List[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(arms[name], steps))
    return times


def ratio(times: Dict[str, List[float]]) -> Tuple[float, float, float]:
    ratios = [p / o for p, o in zip(times["paddle"], times["onednn"])]
    return statistics.median(ratios), min(ratios), max(ratios)


def per_layer(width: int, batch: int, size: int, rounds: int, steps: int) -> None:
    print(f"per layer: forward + backward, UNet width {width}, batch {batch}, {size} px")
    print(f"{'input':>20s} {'weights':>18s} {'Paddle ms':>10s} {'oneDNN ms':>10s} "
          f"{'speed-up (median, range)':>26s}")
    totals = {"paddle": 0.0, "onednn": 0.0}
    for x_shape, w_shape in unet_conv_shapes(width, batch, size):
        x = paddle.randn(list(x_shape))
        x.stop_gradient = x_shape[1] == 3  # the image needs no gradient, as in training
        w = paddle.randn(list(w_shape)) * 0.05
        w.stop_gradient = False

        def arm(conv):
            def run() -> None:
                conv(x, w, padding=1).sum().backward()
            return run

        times = alternate({"paddle": arm(F.conv2d), "onednn": arm(onednn.conv2d)}, rounds, steps)
        med, low, high = ratio(times)
        for name in totals:
            totals[name] += statistics.median(times[name])
        print(f"{str(list(x_shape)):>20s} {str(list(w_shape)):>18s} "
              f"{statistics.median(times['paddle']) * 1e3:10.1f} "
              f"{statistics.median(times['onednn']) * 1e3:10.1f} "
              f"{med:9.2f}x ({low:.2f}-{high:.2f})")
    print(f"{'all distinct layers':>39s} {totals['paddle'] * 1e3:10.1f} "
          f"{totals['onednn'] * 1e3:10.1f} {totals['paddle'] / totals['onednn']:9.2f}x")


def training_step(width: int, batch: int, size: int, rounds: int, steps: int) -> None:
    paddle.seed(0)
    model = UNet(num_classes=2, base_channels=width)
    opt = paddle.optimizer.Adam(learning_rate=1e-4, parameters=model.parameters())
    x = paddle.randn([batch, 3, size, size])
    label = paddle.randint(0, 2, [batch, size, size])

    def arm(switch: str) -> Callable[[], None]:
        def run() -> None:
            os.environ["PADDLESEG_UNET_ONEDNN"] = switch
            loss = F.cross_entropy(model(x)[0], label, axis=1)
            loss.backward()
            opt.step()
            opt.clear_grad()
        return run

    times = alternate({"paddle": arm("0"), "onednn": arm("1")}, rounds, steps)
    os.environ.pop("PADDLESEG_UNET_ONEDNN")
    med, low, high = ratio(times)
    print(f"training step, UNet width {width:3d}, batch {batch}, {size} px: Paddle "
          f"{statistics.median(times['paddle']):.3f} s, oneDNN "
          f"{statistics.median(times['onednn']):.3f} s, speed-up {med:.2f}x "
          f"(rounds {low:.2f}-{high:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=64, help="UNet width of the per-layer table")
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 16],
                    help="UNet widths of the training-step measurement")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per arm and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip_layers", action="store_true", help="only the training steps")
    args = ap.parse_args()
    if not onednn.enabled():
        print("oneDNN is not available in this Paddle (paddle/libs/libdnnl.so.3): nothing to "
              "compare")
        return
    set_cpu_threads(args.threads)
    print(f"{args.threads} threads, {args.rounds} rounds x {args.steps} steps per arm; load "
          f"average {os.getloadavg()[0]:.2f}")
    if not args.skip_layers:
        per_layer(args.width, args.batch, args.size, args.rounds, args.steps)
    for width in args.widths:
        training_step(width, args.batch, args.size, args.rounds, args.steps)


if __name__ == "__main__":
    main()
