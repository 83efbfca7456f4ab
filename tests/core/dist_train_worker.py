"""Builders shared by the training tests, and the script each process of the 2-process
data-parallel test runs:

    python -m paddle.distributed.launch --nproc_per_node 2 tests/core/dist_train_worker.py \
        --root DATASET --out DIR --iters K --batch_size B

Every rank trains the same tiny UNet with the Trainer and writes its final weights to
``DIR/rank<r>.npz``. BatchNorm layers use their running statistics (``use_global_stats``)
because Paddle has no CPU SyncBatchNorm: with per-rank batch statistics two processes
of batch B would normalize differently from one process of batch 2B.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

CROP = 32
FLIP_CROP = [{"type": "RandomPaddingCrop", "crop_size": [CROP, CROP]},
             {"type": "RandomHorizontalFlip"}, {"type": "Normalize"}]


def write_tiny_dataset(root: str, num_images: int = 8, size: int = 40, num_val: int = 2,
                       seed: int = 0) -> str:
    """PaddleSeg's generic layout: images/*.png, labels/*.png (0/1), train_list.txt and
    val_list.txt (the last ``num_val`` images). A bright disc on noise is the class 1."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    lines = []
    for i in range(num_images):
        cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
        radius = rng.uniform(0.15 * size, 0.3 * size)
        label = (((yy - cy) ** 2 + (xx - cx) ** 2) < radius ** 2).astype(np.uint8)
        img = rng.integers(0, 90, (size, size, 3)) + 120 * label[..., None]
        cv2.imwrite(os.path.join(root, "images", f"{i}.png"), img.astype(np.uint8))
        cv2.imwrite(os.path.join(root, "labels", f"{i}.png"), label)
        lines.append(f"images/{i}.png labels/{i}.png")
    with open(os.path.join(root, "train_list.txt"), "w") as f:
        f.write("\n".join(lines[:num_images - num_val]) + "\n")
    with open(os.path.join(root, "val_list.txt"), "w") as f:
        f.write("\n".join(lines[num_images - num_val:]) + "\n")
    return root


def build_parts(root: str, iters: int, *, transforms: Optional[List[Any]] = None,
                optimizer: Optional[Dict[str, Any]] = None,
                lr_scheduler: Optional[Dict[str, Any]] = None, base_channels: int = 4,
                global_bn_stats: bool = False, seed: int = 0) -> Tuple[Any, ...]:
    """(model, train_dataset, loss, optimizer, lr_scheduler) of a tiny run; the model is
    initialised from ``paddle.seed(seed)``, so every process builds the same weights."""
    import paddle

    from paddleseg_unet.core.optim import build_lr_scheduler, build_optimizer
    from paddleseg_unet.datasets import Dataset
    from paddleseg_unet.models.losses import build_loss
    from paddleseg_unet.models.unet import UNet

    paddle.seed(seed)
    model = UNet(2, base_channels=base_channels)
    if global_bn_stats:
        for layer in model.sublayers():
            if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
                layer._use_global_stats = True
    dataset = Dataset(root, FLIP_CROP if transforms is None else transforms, 2, "train",
                      train_path="train_list.txt")
    scheduler = build_lr_scheduler(lr_scheduler or {"type": "PolynomialDecay",
                                                    "learning_rate": 0.01}, iters)
    opt = build_optimizer(optimizer or {"type": "Adam"}, model.parameters(), scheduler)
    loss = build_loss({"types": [{"type": "CrossEntropyLoss"}], "coef": [1]})
    return model, dataset, loss, opt, scheduler


def weights_of(model: Any) -> Dict[str, np.ndarray]:
    return {key: value.numpy().copy() for key, value in model.state_dict().items()}


def data_parallel_run(root: str, out: str, iters: int, batch_size: int) -> None:
    import paddle

    from paddleseg_unet.core.train import Trainer, TrainOptions
    from paddleseg_unet.utils.logger import setup_logger

    paddle.set_device("cpu")
    paddle.distributed.init_parallel_env()
    rank = paddle.distributed.get_rank()
    setup_logger(rank=rank)
    model, dataset, loss, opt, scheduler = build_parts(
        root, iters, optimizer={"type": "SGD", "momentum": 0.9}, global_bn_stats=True)
    options = TrainOptions(iters=iters, batch_size=batch_size, save_dir=os.path.join(out, "run"),
                           save_interval=iters, log_iters=1)
    trainer = Trainer(model, dataset, loss, opt, scheduler, options)
    trainer.train()
    np.savez(os.path.join(out, f"rank{rank}.npz"), world_size=trainer.world_size,
             losses=[row["loss"] for row in trainer.history], **weights_of(model))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=2)
    args = parser.parse_args()
    data_parallel_run(args.root, args.out, args.iters, args.batch_size)


if __name__ == "__main__":
    main()
