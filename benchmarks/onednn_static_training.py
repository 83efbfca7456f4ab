"""Does a UNet training step run on Paddle's oneDNN kernels, and is it faster?

Paddle's eager CPU convolutions are im2col + GEMM whatever ``FLAGS_use_onednn`` says; a
static graph translated with ``paddle.jit.to_static(full_graph=True)`` under
``FLAGS_use_mkldnn=1`` is lowered to oneDNN kernels instead. This runs the same training
steps (UNet, cross-entropy, SGD, one fixed random batch) in two child processes, eager and
oneDNN-static, and prints each arm's losses and seconds per step, or how the arm failed
(a oneDNN failure can abort the process, hence the children). With Paddle 3.3.1 the static
arm fails in ``bilinear_interp``; rerun it on a newer Paddle to see whether the lever opens.

    python benchmarks/onednn_static_training.py [--width 64] [--size 128] [--batch 4]
        [--steps 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ARMS = {"eager": {}, "onednn_static": {"FLAGS_use_mkldnn": "1"}}


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np
    import paddle

    from paddleseg_unet.models.unet import UNet

    paddle.set_device("cpu")
    paddle.seed(0)
    model = UNet(num_classes=2, base_channels=args.width)
    optimizer = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    ce = paddle.nn.CrossEntropyLoss(axis=1)

    def forward_loss(img: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        return ce(model(img)[0], label)

    step_fn = forward_loss
    if args.arm == "onednn_static":
        step_fn = paddle.jit.to_static(forward_loss, full_graph=True)
    rng = np.random.default_rng(0)
    img = paddle.to_tensor(rng.standard_normal((args.batch, 3, args.size, args.size), "float32"))
    label = paddle.to_tensor(rng.integers(0, 2, (args.batch, args.size, args.size)))
    losses, times = [], []
    for _ in range(args.steps + 1):  # the first step (translation, kernel set-up) is untimed
        start = time.perf_counter()
        loss = step_fn(img, label)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
        times.append(time.perf_counter() - start)
    print(json.dumps({"losses": losses, "sec_per_step": sum(times[1:]) / args.steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="UNet base_channels")
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per arm")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per arm")
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        child(args)
        return
    results = {}
    for arm, flags in ARMS.items():
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **flags)
        argv = [sys.executable, os.path.abspath(__file__), "--arm", arm]
        for name in ("width", "size", "batch", "steps"):
            argv += [f"--{name}", str(getattr(args, name))]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode == 0 and lines:
            results[arm] = json.loads(lines[-1])
            print(f"{arm}: {results[arm]['sec_per_step']:.3f} s per step, losses "
                  + " ".join(f"{v:.6f}" for v in results[arm]["losses"]))
        else:
            errors = [line.strip() for line in proc.stderr.splitlines()
                      if "Error" in line or "raises" in line or "what()" in line]
            print(f"{arm}: failed (exit {proc.returncode}): "
                  f"{errors[-1] if errors else proc.stderr.strip()[-300:]}")
    if len(results) == len(ARMS):
        eager, static = results["eager"], results["onednn_static"]
        diff = max(abs(a - b) for a, b in zip(eager["losses"], static["losses"]))
        print(f"oneDNN-static / eager speed: {eager['sec_per_step'] / static['sec_per_step']:.2f}x;"
              f" max loss difference {diff:.2e}")


if __name__ == "__main__":
    main()
