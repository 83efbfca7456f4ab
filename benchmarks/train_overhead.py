"""Iterations/second of the full Trainer versus a bare training loop of the same model.

Trainer arm: ``Trainer.train()`` as ``tools/train.py`` runs it: images read from disk by
the generic ``Dataset`` (PNG image + PNG label, RandomPaddingCrop 128, flips, Normalize)
through the real loader with worker processes, the [TRAIN] log line every ``--log_iters``,
the lr schedule, and the final checkpoint.
Bare arm: the same model / loss / optimizer / schedule on one batch already in memory as
paddle tensors: forward, loss, backward, optimizer step, scheduler step, clear_grad.

Both arms run in this process with the same Paddle thread count. This machine's speed drifts
by 20-40% within minutes (other tenants), more than the effect measured, so the arms are
interleaved: each round runs one bare and one trainer pass back to back, the order
alternating between rounds (a slow spell hits both arms of a round alike, and neither arm
always runs second). The figures are the median and the mean (with its standard error) over
rounds of trainer/bare. Each trainer pass times the whole ``train()`` call, loader start-up
and checkpoint included. One untimed warm-up pass per arm comes first.
Target: trainer/bare >= 0.95.

    python benchmarks/train_overhead.py [--iters 20] [--rounds 10] [--workers 2] [--threads 2]
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
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import paddle  # noqa: E402

from paddleseg_unet.core.optim import build_lr_scheduler, build_optimizer  # noqa: E402
from paddleseg_unet.core.train import Trainer, TrainOptions  # noqa: E402
from paddleseg_unet.datasets import Dataset  # noqa: E402
from paddleseg_unet.models.losses import build_loss  # noqa: E402
from paddleseg_unet.models.unet import UNet  # noqa: E402
from paddleseg_unet.utils.device import setup_device  # noqa: E402
from paddleseg_unet.utils.logger import logger  # noqa: E402

CROP, BATCH, WIDTH, IMAGES, SIZE = 128, 4, 16, 16, 256
TRANSFORMS = [{"type": "RandomPaddingCrop", "crop_size": [CROP, CROP]},
              {"type": "RandomHorizontalFlip"}, {"type": "RandomVerticalFlip"},
              {"type": "Normalize"}]


def write_dataset(root: str) -> str:
    """IMAGES fundus-sized-ish PNG pairs: noise plus bright discs (label 1)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    lines = []
    for i in range(IMAGES):
        label = np.zeros((SIZE, SIZE), np.uint8)
        for _ in range(6):
            cy, cx, r = rng.uniform(0, SIZE, 2).tolist() + [rng.uniform(8, 40)]
            label |= ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
        img = (rng.integers(0, 100, (SIZE, SIZE, 3)) + 120 * label[..., None]).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "images", f"{i}.png"), img)
        cv2.imwrite(os.path.join(root, "labels", f"{i}.png"), label)
        lines.append(f"images/{i}.png labels/{i}.png")
    with open(os.path.join(root, "train_list.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


def build(iters: int, width: int = WIDTH) -> Tuple[Any, Any, Any, Any]:
    paddle.seed(0)
    model = UNet(2, base_channels=width)
    scheduler = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.01}, iters)
    optimizer = build_optimizer({"type": "Adam"}, model.parameters(), scheduler)
    loss = build_loss({"types": [{"type": "CrossEntropyLoss"}], "coef": [1]})
    return model, loss, optimizer, scheduler


def run_trainer(root: str, work: str, iters: int, workers: int, log_iters: int,
                width: int = WIDTH, to_static_training: bool = False) -> float:
    model, loss, optimizer, scheduler = build(iters, width)
    dataset = Dataset(root, TRANSFORMS, 2, "train", train_path="train_list.txt")
    save_dir = os.path.join(work, "out")
    shutil.rmtree(save_dir, ignore_errors=True)
    options = TrainOptions(iters=iters, batch_size=BATCH, save_dir=save_dir,
                           save_interval=iters, log_iters=log_iters, num_workers=workers,
                           to_static_training=to_static_training)
    trainer = Trainer(model, dataset, loss, optimizer, scheduler, options)
    start = time.perf_counter()
    trainer.train()
    return iters / (time.perf_counter() - start)


def run_bare(batch: Dict[str, paddle.Tensor], iters: int) -> float:
    model, loss_fn, optimizer, scheduler = build(iters)
    model.train()
    img, label = batch["img"], batch["label"]
    start = time.perf_counter()
    for _ in range(iters):
        loss = loss_fn(model(img), label)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.clear_grad()
    float(loss)  # wait for the last step, as the trainer's final log line does
    return iters / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="iterations per timed round")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=2, help="trainer's loader workers")
    parser.add_argument("--threads", type=int, default=2, help="Paddle CPU threads")
    parser.add_argument("--log_iters", type=int, default=10, help="trainer's log interval")
    args = parser.parse_args()
    setup_device("cpu", args.threads)
    logger.setLevel(logging.WARNING)  # keep the trainer's lines out of the report
    work = tempfile.mkdtemp(prefix="train_overhead_")
    try:
        root = write_dataset(os.path.join(work, "data"))
        sample_set = Dataset(root, TRANSFORMS, 2, "train", train_path="train_list.txt")
        samples = [sample_set[(i, 0, i)] for i in range(BATCH)]
        batch = {"img": paddle.to_tensor(np.stack([s["img"] for s in samples])),
                 "label": paddle.to_tensor(np.stack([s["label"] for s in samples]))}
        print(f"UNet base_channels {WIDTH}, batch {BATCH}, {CROP}x{CROP} crops, "
              f"{args.threads} Paddle threads, {args.workers} loader workers, "
              f"{args.iters} iterations per round")
        run_bare(batch, 3)  # warm-up: kernels, allocator
        run_trainer(root, work, 3, args.workers, args.log_iters)
        rates: Dict[str, List[float]] = {"bare": [], "trainer": []}
        arms = {"bare": lambda: run_bare(batch, args.iters),
                "trainer": lambda: run_trainer(root, work, args.iters, args.workers,
                                               args.log_iters)}
        ratios = []
        for round_index in range(args.rounds):
            order = ("bare", "trainer") if round_index % 2 == 0 else ("trainer", "bare")
            for arm in order:
                rates[arm].append(arms[arm]())
            ratios.append(rates["trainer"][-1] / rates["bare"][-1])
            print(f"round {round_index + 1}: bare {rates['bare'][-1]:.3f} it/s, trainer "
                  f"{rates['trainer'][-1]:.3f} it/s, ratio {ratios[-1]:.3f}", flush=True)
        for arm, values in rates.items():
            print(f"{arm:8s} median {statistics.median(values):.3f} it/s "
                  f"(range {min(values):.3f}-{max(values):.3f})")
        spread = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
        print(f"ratio trainer/bare over {args.rounds} rounds: median {statistics.median(ratios):.3f}"
              f", mean {statistics.mean(ratios):.3f} +- {spread:.3f} (standard error), range "
              f"{min(ratios):.3f}-{max(ratios):.3f}; target >= 0.95")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
