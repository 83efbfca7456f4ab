"""Training-step speed: one process on every core versus one 1-thread process per core.

The question behind it: would ``paddle.distributed.launch`` (one process per core, the
global batch split between them) make full-width training on a CPU faster than one process
running its kernels on all cores, as PaddleSeg's trainer does? This measures the upper
bound of that gain, the compute alone: the "threads" arm is one process with ``--cores``
Paddle threads at batch ``--batch``; the "processes" arm is ``--cores`` processes started
together, each with 1 thread at batch ``--batch / --cores``, timed by the slowest. No
gradient all-reduce and no BatchNorm synchronisation are done, so a real multi-process run
would be slower than the "processes" arm (and its BatchNorm sees the smaller per-process
batch). Each arm is a fresh process: UNet, CE loss, SGD, random 128x128 crops held in
memory, ``--warmup`` untimed steps then ``--steps`` timed ones. The arms alternate for
``--rounds`` rounds (which goes first alternates too); the figure is the median of the
per-round ratios threads/processes (> 1: processes faster).

    python benchmarks/train_processes.py [--width 64] [--batch 4] [--cores 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import List, Optional

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def worker(width: int, batch: int, threads: int, warmup: int, steps: int) -> float:
    """Seconds per training step of one process."""
    sys.path.insert(0, REPO)
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from paddleseg_unet.models.unet import UNet
    from paddleseg_unet.utils.device import set_cpu_threads

    paddle.set_device("cpu")
    set_cpu_threads(threads)
    paddle.seed(0)
    model = UNet(2, base_channels=width)
    optimizer = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    rng = np.random.default_rng(0)
    images = paddle.to_tensor(rng.random((batch, 3, 128, 128), dtype=np.float32))
    labels = paddle.to_tensor(rng.integers(0, 2, (batch, 128, 128)))

    def step() -> None:
        loss = F.cross_entropy(model(images)[0], labels, axis=1)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def run_arm(procs: int, threads: int, batch: int, args: argparse.Namespace) -> float:
    """Start ``procs`` workers at once; the slowest one's seconds per step."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--width", str(args.width),
           "--batch", str(batch), "--threads", str(threads), "--warmup", str(args.warmup),
           "--steps", str(args.steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    running = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=env) for _ in range(procs)]
    times = []
    for proc in running:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker failed (exit {proc.returncode}): {' '.join(cmd)}")
        times.append(float(out.strip().splitlines()[-1]))
    return max(times)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="UNet base_channels")
    parser.add_argument("--batch", type=int, default=4, help="global batch of both arms")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(worker(args.width, args.batch, args.threads, args.warmup, args.steps))
        return 0
    if args.batch % args.cores:
        parser.error(f"--batch {args.batch} does not split over --cores {args.cores}")
    print(f"UNet width {args.width}, global batch {args.batch}, 128x128, {args.cores} cores: "
          f"1 process x {args.cores} threads vs {args.cores} processes x 1 thread "
          f"(batch {args.batch // args.cores} each)")
    ratios = []
    for r in range(args.rounds):
        order = ["threads", "processes"] if r % 2 == 0 else ["processes", "threads"]
        seconds = {}
        for arm in order:
            if arm == "threads":
                seconds[arm] = run_arm(1, args.cores, args.batch, args)
            else:
                seconds[arm] = run_arm(args.cores, 1, args.batch // args.cores, args)
        ratios.append(seconds["threads"] / seconds["processes"])
        print(f"round {r + 1}: threads {seconds['threads']:.3f} s/step, processes "
              f"{seconds['processes']:.3f} s/step, ratio {ratios[-1]:.3f}", flush=True)
    print(f"threads/processes, median of {args.rounds} rounds: {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}; > 1: processes faster, before any "
          f"all-reduce)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
