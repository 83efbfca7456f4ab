"""Iterations/second of ``--to_static_training`` (forward + loss as one static graph)
versus eager, with the full Trainer of benchmarks/train_overhead.py (the same generated
dataset, loader, 128 px crops, batch 4, Adam), at UNet width 64 (the reference) and 16.

Each round runs one eager and one static pass back to back, the order alternating between
rounds; the figure is the median over rounds of static/eager (> 1: static faster). Each
pass builds a new Trainer, so the static pass pays its one-off graph translation; the
``--iters`` per pass decide how much of it is amortized (it is reported separately: the
first pass of each arm is an untimed warm-up whose time is printed).

    python benchmarks/train_static.py [--widths 64 16] [--iters 20] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_overhead import run_trainer, write_dataset  # noqa: E402

from paddleseg_unet.utils.device import setup_device  # noqa: E402
from paddleseg_unet.utils.logger import logger  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--iters", type=int, default=20, help="iterations per timed pass")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=2, help="Paddle CPU threads")
    args = parser.parse_args()
    setup_device("cpu", args.threads)
    logger.setLevel(logging.WARNING)
    work = tempfile.mkdtemp(prefix="train_static_")
    try:
        root = write_dataset(os.path.join(work, "data"))
        print(f"{args.threads} Paddle threads, {args.iters} iterations per pass, "
              f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f}", flush=True)
        for width in args.widths:
            arms = {"eager": False, "static": True}
            for arm, static in arms.items():  # warm-up (and the one-off translation)
                start = time.perf_counter()
                run_trainer(root, work, 2, 0, 10, width, static)
                print(f"width {width}: {arm} warm-up pass of 2 iterations "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
            rates = {"eager": [], "static": []}
            ratios = []
            for r in range(args.rounds):
                order = list(arms) if r % 2 == 0 else list(arms)[::-1]
                for arm in order:
                    rates[arm].append(run_trainer(root, work, args.iters, 0, 10, width,
                                                  arms[arm]))
                ratios.append(rates["static"][-1] / rates["eager"][-1])
                print(f"width {width} round {r + 1}: eager {rates['eager'][-1]:.3f} it/s, "
                      f"static {rates['static'][-1]:.3f} it/s, ratio {ratios[-1]:.3f}",
                      flush=True)
            print(f"width {width}: static/eager median {statistics.median(ratios):.3f} "
                  f"(range {min(ratios):.3f}-{max(ratios):.3f}) over {args.rounds} rounds; "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
