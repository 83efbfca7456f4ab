"""Speed of UNet's conv-bias folding: ConvBNReLU as it runs versus the plain conv(+bias) -> BN.

``ConvBNReLU`` folds the conv bias into BatchNorm in eager mode (see its docstring). The
baseline arm runs the same layers unfolded, ``relu(bn(conv(x)))``, i.e. what the layer
computes without the folding. Same model, weights and batch; the arms alternate for
``--rounds`` rounds and the best round of each counts (the least disturbed by other load).
Measures a training step (forward, CE loss, backward, Adam step) and an eval forward.

    python benchmarks/conv_bias_folding.py [--width 16] [--batch 4] [--size 128] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

from paddleseg_unet.models import unet as unet_module  # noqa: E402
from paddleseg_unet.models.unet import UNet  # noqa: E402
from paddleseg_unet.utils.device import set_cpu_threads  # noqa: E402

FOLDED = unet_module.ConvBNReLU.forward


def plain_forward(self, x: paddle.Tensor) -> paddle.Tensor:
    return F.relu(self._batch_norm(self._conv(x)))


def timed(fn: Callable[[], None], steps: int) -> float:
    fn()  # warm-up: kernels picked, buffers allocated
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=16, help="UNet base_channels")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_cpu_threads(args.threads)
    paddle.seed(0)
    model = UNet(num_classes=2, base_channels=args.width)
    opt = paddle.optimizer.Adam(learning_rate=1e-4, parameters=model.parameters())
    x = paddle.randn([args.batch, 3, args.size, args.size])
    y = paddle.randint(0, 2, [args.batch, 1, args.size, args.size])

    def train_step() -> None:
        model.train()
        loss = F.cross_entropy(model(x)[0], y, axis=1).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()

    @paddle.no_grad()
    def eval_forward() -> None:
        model.eval()
        model(x)[0].numpy()

    best: Dict[str, float] = {}
    for _ in range(args.rounds):
        for arm, forward in (("plain", plain_forward), ("folded", FOLDED)):
            unet_module.ConvBNReLU.forward = forward
            for task, fn in (("train step", train_step), ("eval forward", eval_forward)):
                key = f"{task}|{arm}"
                best[key] = min(best.get(key, float("inf")), timed(fn, args.steps))
    unet_module.ConvBNReLU.forward = FOLDED
    print(f"UNet width {args.width}, batch {args.batch}x3x{args.size}x{args.size}, "
          f"{args.threads} threads, best of {args.rounds} rounds x {args.steps} steps")
    for task in ("train step", "eval forward"):
        plain, folded = best[f"{task}|plain"], best[f"{task}|folded"]
        print(f"{task:13s} plain {plain * 1000:8.1f} ms  folded {folded * 1000:8.1f} ms  "
              f"speed-up {plain / folded:.2f}x")


if __name__ == "__main__":
    main()
