"""Samples/second of the DRIVE train pipeline: ours versus the same chain done the PaddleSeg way.

Chain (the unet_drive_128x128_40k train transforms): ResizeStepScaling(0.5, 2.0, 0.25),
RandomPaddingCrop(128), RandomHorizontalFlip(0.5), RandomVerticalFlip(0.1),
RandomDistort(brightness/contrast/saturation range 0.4, hue on by default), Normalize, CHW.

"PaddleSeg way" (written out below, after PaddleSeg's behaviour): float32 image from the
start, cv2 resize and padding on float32, RandomDistort converting to uint8 and a PIL image,
ImageEnhance per op (hue through a numpy HSV round trip) and back to float32, then
Normalize on float32 and a transposed view. Both arms run in this one process, one cv2
thread each (as in a data-loader worker), on the same images and the same number of draws.

Two measurements are printed:
1. transform chain only: the 20 training images are decoded once into memory (Pillow),
   so only the transforms are compared (the headline ratio);
2. with decoding: each sample is read from disk with Pillow (tif image, gif label) in both
   arms, which is what a worker does per sample.

    python benchmarks/data_pipeline.py [--data /path/to/shared/data] [--samples 300]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from paddleseg_unet.transforms import (Compose, Normalize, RandomDistort,  # noqa: E402
                                       RandomHorizontalFlip, RandomPaddingCrop,
                                       RandomVerticalFlip, ResizeStepScaling)

CROP = 128
RANGE = 0.4
MEAN = STD = np.array([0.5, 0.5, 0.5], np.float32)


# ----------------------------------------------------------------------------- data
def drive_pairs(data_root: str) -> List[Tuple[str, str]]:
    folder = os.path.join(data_root, "DRIVE", "training")
    pairs = []
    for n in range(21, 41):
        img = os.path.join(folder, "images", f"{n}_training.tif")
        label = os.path.join(folder, "1st_manual", f"{n}_manual1.gif")
        if os.path.isfile(img) and os.path.isfile(label):
            pairs.append((img, label))
    return pairs


def read_pair(img_path: str, label_path: str) -> Tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and 0/1 uint8 label, the same reader for both arms."""
    with Image.open(img_path) as im:
        img = np.asarray(im.convert("RGB"))
    with Image.open(label_path) as lab:
        label = (np.asarray(lab.convert("L")) > 0).astype(np.uint8)
    return img, label


# ----------------------------------------------------------------------------- PaddleSeg way
def _ps_resize_step_scaling(im: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    num_steps = int((2.0 - 0.5) / 0.25 + 1)
    factors = np.linspace(0.5, 2.0, num_steps).tolist()
    factors = [factors[i] for i in rng.permutation(len(factors))]
    scale = factors[0]
    w = int(round(scale * im.shape[1]))
    h = int(round(scale * im.shape[0]))
    im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return im, label


def _ps_random_padding_crop(im: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    h, w = im.shape[:2]
    if (h, w) == (CROP, CROP):
        return im, label
    pad_h, pad_w = max(CROP - h, 0), max(CROP - w, 0)
    if pad_h > 0 or pad_w > 0:
        im = cv2.copyMakeBorder(im, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                value=(127.5, 127.5, 127.5))
        label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=255)
        h, w = im.shape[:2]
    top = rng.integers(h - CROP + 1)
    left = rng.integers(w - CROP + 1)
    return im[top:top + CROP, left:left + CROP, :], label[top:top + CROP, left:left + CROP]


def _ps_hue(pil: Image.Image, delta: float) -> Image.Image:
    hsv = np.array(pil.convert("HSV"))
    # PaddleSeg adds the float shift and stores it back into the uint8 array (wrapping).
    hsv[:, :, 0] = ((hsv[:, :, 0] + delta) % 256).astype(np.uint8)
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


def _ps_distort(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ops = [
        lambda p: ImageEnhance.Brightness(p).enhance(rng.uniform(1 - RANGE, 1 + RANGE)),
        lambda p: ImageEnhance.Contrast(p).enhance(rng.uniform(1 - RANGE, 1 + RANGE)),
        lambda p: ImageEnhance.Color(p).enhance(rng.uniform(1 - RANGE, 1 + RANGE)),
        lambda p: _ps_hue(p, rng.uniform(-18, 18)),
    ]
    pil = Image.fromarray(im.astype("uint8"))
    for i in rng.permutation(len(ops)):
        if rng.uniform(0, 1) < 0.5:
            pil = ops[i](pil)
    return np.asarray(pil).astype("float32")


def paddleseg_way(img: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    im = img.astype("float32")  # PaddleSeg reads with cv2.imread(...).astype('float32')
    im, label = _ps_resize_step_scaling(im, label, rng)
    im, label = _ps_random_padding_crop(im, label, rng)
    if rng.random() < 0.5:
        im, label = im[:, ::-1, :], label[:, ::-1]
    if rng.random() < 0.1:
        im, label = im[::-1, :, :], label[::-1, :]
    im = _ps_distort(im, rng)
    im = im.astype(np.float32, copy=False) / 255.0
    im -= MEAN
    im /= STD
    return np.transpose(im, (2, 0, 1)), label


# ----------------------------------------------------------------------------- ours
def ours_pipeline() -> Compose:
    return Compose([
        ResizeStepScaling(0.5, 2.0, 0.25),
        RandomPaddingCrop((CROP, CROP)),
        RandomHorizontalFlip(0.5),
        RandomVerticalFlip(0.1),
        RandomDistort(brightness_range=RANGE, contrast_range=RANGE, saturation_range=RANGE),
        Normalize(),
    ])


# ----------------------------------------------------------------------------- timing
def rate(step: Callable[[int, np.random.Generator], object], samples: int, seed: int) -> float:
    """Samples per second of ``step`` over ``samples`` calls (after a short warm-up)."""
    rng = np.random.default_rng(seed)
    for i in range(10):
        step(i, rng)
    start = time.perf_counter()
    for i in range(samples):
        step(i, rng)
    return samples / (time.perf_counter() - start)


def compare(title: str, ours: Callable, theirs: Callable, samples: int, rounds: int
            ) -> Dict[str, float]:
    best = {"ours": 0.0, "paddleseg": 0.0}
    for r in range(rounds):  # alternate arms so drifts in machine load hit both
        best["paddleseg"] = max(best["paddleseg"], rate(theirs, samples, seed=r))
        best["ours"] = max(best["ours"], rate(ours, samples, seed=r))
    ratio = best["ours"] / best["paddleseg"]
    print(f"{title}:\n  ours       {best['ours']:8.1f} samples/s\n"
          f"  PaddleSeg  {best['paddleseg']:8.1f} samples/s\n  ratio      {ratio:8.2f}x")
    best["ratio"] = ratio
    return best


def main(argv: List[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get(
        "PADDLESEG_UNET_SHARED_DATA", os.path.join(here, "..", "..", "shared", "data")),
        help="folder holding DRIVE/training (default: $PADDLESEG_UNET_SHARED_DATA or "
             "<repo>/../shared/data)")
    parser.add_argument("--samples", type=int, default=300, help="samples per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm (best)")
    parser.add_argument("--threads", type=int, default=1, help="cv2 threads (default 1)")
    args = parser.parse_args(argv)

    pairs = drive_pairs(args.data)
    if not pairs:
        print(f"SKIP: no DRIVE training images under {os.path.abspath(args.data)}/DRIVE/"
              f"training; pass --data or set PADDLESEG_UNET_SHARED_DATA")
        return 0
    cv2.setNumThreads(args.threads)
    print(f"DRIVE training pairs: {len(pairs)}; cv2 threads: {args.threads}; "
          f"{args.samples} samples x {args.rounds} rounds per arm (best round)")

    decoded = [read_pair(i, l) for i, l in pairs]
    pipeline = ours_pipeline()

    def ours_mem(i: int, rng: np.random.Generator):
        img, label = decoded[i % len(decoded)]
        return pipeline({"img": img, "label": label}, rng)

    def theirs_mem(i: int, rng: np.random.Generator):
        img, label = decoded[i % len(decoded)]
        return paddleseg_way(img, label, rng)

    def ours_disk(i: int, rng: np.random.Generator):
        img, label = read_pair(*pairs[i % len(pairs)])
        return pipeline({"img": img, "label": label}, rng)

    def theirs_disk(i: int, rng: np.random.Generator):
        img, label = read_pair(*pairs[i % len(pairs)])
        return paddleseg_way(img, label, rng)

    compare("1. transform chain only (images pre-decoded in memory)", ours_mem, theirs_mem,
            args.samples, args.rounds)
    compare("2. with per-sample Pillow decoding (tif + gif)", ours_disk, theirs_disk,
            max(args.samples // 3, 30), args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
