"""Samples/second of the DRIVE train pipeline: ours versus the same chain done the PaddleSeg way.

Both arms read the SAME converted DRIVE PNGs (``tools/convert_dataset.py drive`` layout:
converted into a temporary folder at start, or an existing converted root via --root) and
run the train transforms of configs/unet/unet_drive_128x128_40k.yml (ResizeStepScaling
0.5..2.0, RandomPaddingCrop 128, RandomHorizontalFlip, RandomVerticalFlip, RandomDistort,
Normalize), one sample at a time in this one process with one OpenCV thread (as in a
data-loader worker).

- ours: exactly what training does, ``DRIVE(root, transforms=<config>, mode='train')``
  indexed by ``dataset[(index, seed, draw)]`` (read + checks + transforms + CHW float32).
  Retina datasets keep decoded images in memory by default (``cache_images``), so after
  the first epoch a sample costs its transforms only; the cache is filled before timing
  (training reads each of the 20 images hundreds of times). ``ours, cache_images=False``
  is also timed: it decodes the PNG on every read, as PaddleSeg does;
- PaddleSeg way (PaddleSeg 2.x behaviour, written out below): the image read by
  ``cv2.imread(path).astype('float32')`` and turned RGB with cvtColor, the label by
  ``np.asarray(Image.open(path))``; cv2.resize and cv2.copyMakeBorder on the float32
  image, flips as views, RandomDistort turning it into a uint8 PIL image, one ImageEnhance
  per op (hue through a numpy HSV round trip) and back to float32, Normalize on float32,
  then a transposed view.

Figures printed, each the median over interleaved rounds (arms alternate within a round,
so drifts in machine load hit both):
1. full pipeline (read + transforms): the headline ratio (ours as configured by default
   against PaddleSeg), and ours without the decoded-image cache;
2. reading only: ours ``dataset.load`` as training calls it (decode + checks), PaddleSeg's
   Compose reading (decode + float32 + cvtColor, label through Pillow);
3. transforms only, each arm starting from its decoded image held in memory.

    python benchmarks/data_pipeline.py [--root CONVERTED_DRIVE | --data SHARED_DATA]
                                       [--samples 200] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageEnhance

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from paddleseg_unet.cvlibs.config import load_config  # noqa: E402
from paddleseg_unet.datasets import DRIVE, read_image, read_label  # noqa: E402
from paddleseg_unet.datasets.converters import convert  # noqa: E402

CONFIG = os.path.join(HERE, "..", "configs", "unet", "unet_drive_128x128_40k.yml")

Step = Callable[[int, np.random.Generator], Any]
PSOp = Callable[[np.ndarray, np.ndarray, np.random.Generator], Tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- PaddleSeg way
class PSResizeStepScaling:
    def __init__(self, min_scale_factor: float = 0.75, max_scale_factor: float = 1.25,
                 scale_step_size: float = 0.25) -> None:
        self.low, self.high, self.step = min_scale_factor, max_scale_factor, scale_step_size

    def __call__(self, im, label, rng):
        if self.low == self.high:
            scale = self.low
        elif self.step == 0:
            scale = rng.uniform(self.low, self.high)
        else:  # PaddleSeg shuffles the linspace list of factors and takes the first
            factors = np.linspace(self.low, self.high,
                                  int((self.high - self.low) / self.step + 1)).tolist()
            rng.shuffle(factors)
            scale = factors[0]
        size = (int(round(scale * im.shape[1])), int(round(scale * im.shape[0])))
        return (cv2.resize(im, size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


class PSRandomPaddingCrop:
    def __init__(self, crop_size: Sequence[int] = (512, 512),
                 im_padding_value: Sequence[float] = (127.5, 127.5, 127.5),
                 label_padding_value: int = 255) -> None:
        self.crop_w, self.crop_h = crop_size
        self.im_pad = im_padding_value
        self.label_pad = label_padding_value

    def __call__(self, im, label, rng):
        h, w = im.shape[:2]
        if (h, w) == (self.crop_h, self.crop_w):
            return im, label
        pad_h, pad_w = max(self.crop_h - h, 0), max(self.crop_w - w, 0)
        if pad_h > 0 or pad_w > 0:
            im = cv2.copyMakeBorder(im, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                    value=self.im_pad)
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                       value=self.label_pad)
            h, w = im.shape[:2]
        top = rng.integers(h - self.crop_h + 1)
        left = rng.integers(w - self.crop_w + 1)
        return (im[top:top + self.crop_h, left:left + self.crop_w, :],
                label[top:top + self.crop_h, left:left + self.crop_w])


class PSFlip:
    def __init__(self, axis: int, prob: float) -> None:
        self.axis, self.prob = axis, prob

    def __call__(self, im, label, rng):
        if rng.random() < self.prob:  # views, as PaddleSeg's functional flips
            return np.flip(im, self.axis), np.flip(label, self.axis)
        return im, label


def _ps_hue(pil: Image.Image, delta: float) -> Image.Image:
    hsv = np.array(pil.convert("HSV"))
    hsv[:, :, 0] = ((hsv[:, :, 0] + delta) % 256).astype(np.uint8)  # uint8 wrap-around
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


class PSRandomDistort:
    def __init__(self, brightness_range: float = 0.5, brightness_prob: float = 0.5,
                 contrast_range: float = 0.5, contrast_prob: float = 0.5,
                 saturation_range: float = 0.5, saturation_prob: float = 0.5,
                 hue_range: float = 18, hue_prob: float = 0.5,
                 sharpness_range: float = 0.5, sharpness_prob: float = 0) -> None:
        enhance = [(ImageEnhance.Brightness, brightness_range, brightness_prob),
                   (ImageEnhance.Contrast, contrast_range, contrast_prob),
                   (ImageEnhance.Color, saturation_range, saturation_prob),
                   (ImageEnhance.Sharpness, sharpness_range, sharpness_prob)]
        self.ops: List[Tuple[Callable, float, float, float]] = [
            (lambda p, f, e=e: e(p).enhance(f), 1 - r, 1 + r, prob) for e, r, prob in enhance]
        self.ops.insert(3, (_ps_hue, -hue_range, hue_range, hue_prob))

    def __call__(self, im, label, rng):
        pil = Image.fromarray(im.astype("uint8"))
        for i in rng.permutation(len(self.ops)):
            op, low, high, prob = self.ops[i]
            if rng.uniform(0, 1) < prob:
                pil = op(pil, rng.uniform(low, high))
        return np.asarray(pil).astype("float32"), label


class PSNormalize:
    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        self.mean = np.array(mean)[np.newaxis, np.newaxis, :]
        self.std = np.array(std)[np.newaxis, np.newaxis, :]

    def __call__(self, im, label, rng):
        im = im.astype(np.float32, copy=False) / 255.0
        im -= self.mean
        im /= self.std
        return im, label


PS_TRANSFORMS: Dict[str, Callable[..., PSOp]] = {
    "ResizeStepScaling": PSResizeStepScaling,
    "RandomPaddingCrop": PSRandomPaddingCrop,
    "RandomHorizontalFlip": lambda prob=0.5: PSFlip(1, prob),
    "RandomVerticalFlip": lambda prob=0.1: PSFlip(0, prob),
    "RandomDistort": PSRandomDistort,
    "Normalize": PSNormalize,
}


class PaddleSegWay:
    """The config's transform specs run as PaddleSeg 2.x's Compose runs them."""

    def __init__(self, specs: Sequence[Dict[str, Any]]) -> None:
        self.ops = []
        for spec in specs:
            kwargs = dict(spec)
            name = kwargs.pop("type")
            if name not in PS_TRANSFORMS:
                raise SystemExit(f"benchmark: no PaddleSeg-way version of transform {name!r}")
            self.ops.append(PS_TRANSFORMS[name](**kwargs))

    @staticmethod
    def read(img_path: str, label_path: str) -> Tuple[np.ndarray, np.ndarray]:
        im = cv2.cvtColor(cv2.imread(img_path).astype("float32"), cv2.COLOR_BGR2RGB)
        return im, np.asarray(Image.open(label_path))

    def transform(self, im: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        for op in self.ops:
            im, label = op(im, label, rng)
        return np.transpose(im, (2, 0, 1)), label

    def __call__(self, img_path: str, label_path: str, rng: np.random.Generator):
        return self.transform(*self.read(img_path, label_path), rng)


# ----------------------------------------------------------------------------- timing
def rate(step: Step, samples: int, start: int, seed: int) -> float:
    """Samples per second of ``step(i, rng)`` for i in start..start+samples-1."""
    rng = np.random.default_rng(seed)
    begin = time.perf_counter()
    for i in range(start, start + samples):
        step(i, rng)
    return samples / (time.perf_counter() - begin)


def compare(arms: Dict[str, Step], samples: int, rounds: int) -> Dict[str, List[float]]:
    """Per-round samples/s of every arm; arms interleaved, their order rotated per round."""
    names = list(arms)
    for name in names:  # warm-up: caches, lazy imports, OpenCV/PIL first-call costs
        rate(arms[name], 5, 0, seed=0)
    rates: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:  # every arm sees the same sample indices in a round
            rates[name].append(rate(arms[name], samples, r * samples, seed=r))
    return rates


def report(title: str, rates: Dict[str, List[float]], ours: str, theirs: str) -> float:
    print(title)
    for name, values in rates.items():
        print(f"  {name:<22} {statistics.median(values):8.1f} samples/s  (rounds: "
              + ", ".join(f"{v:.1f}" for v in values) + ")")
    ratio = statistics.median(rates[ours]) / statistics.median(rates[theirs])
    per_round = [o / t for o, t in zip(rates[ours], rates[theirs])]
    print(f"  {ours} / {theirs}: {ratio:.2f}x (ratio of the medians; per round "
          + ", ".join(f"{v:.2f}" for v in per_round)
          + f", their median {statistics.median(per_round):.2f}x)")
    return ratio


# ----------------------------------------------------------------------------- main
def converted_root(args: argparse.Namespace) -> Tuple[Optional[str], Optional[str]]:
    """(converted DRIVE root, temporary folder to delete afterwards or None)."""
    if args.root:
        return args.root, None
    src = os.path.join(args.data, "DRIVE")
    if not os.path.isdir(src):
        return None, None
    tmp = tempfile.mkdtemp(prefix="drive-bench-")
    start = time.perf_counter()
    convert("drive", src, os.path.join(tmp, "DRIVE"))
    print(f"converted {src} -> {tmp}/DRIVE in {time.perf_counter() - start:.1f}s")
    return os.path.join(tmp, "DRIVE"), tmp


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="an already converted DRIVE root (train_list.txt ...)")
    parser.add_argument("--data", default=os.environ.get(
        "PADDLESEG_UNET_SHARED_DATA", os.path.join(HERE, "..", "..", "shared", "data")),
        help="folder holding the official DRIVE/, converted to a temporary folder when "
             "--root is not given (default: $PADDLESEG_UNET_SHARED_DATA or "
             "<repo>/../shared/data)")
    parser.add_argument("--config", default=CONFIG, help="config whose train transforms run")
    parser.add_argument("--samples", type=int, default=200, help="samples per arm and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1)")
    args = parser.parse_args(argv)

    root, tmp = converted_root(args)
    if root is None:
        print(f"SKIP: no DRIVE under {os.path.abspath(args.data)}; pass --root or --data, "
              f"or set PADDLESEG_UNET_SHARED_DATA")
        return 0
    try:
        cv2.setNumThreads(args.threads)
        specs = load_config(args.config, purpose=None)["train_dataset"]["transforms"]
        dataset = DRIVE(root, transforms=specs, mode="train", cache_images=False)
        cached = DRIVE(root, transforms=specs, mode="train")  # the default: cache on
        records = dataset.records
        n = len(records)
        paddleseg = PaddleSegWay(specs)
        print(f"{type(dataset).__name__} train: {n} samples from {root}; transforms of "
              f"{os.path.relpath(args.config)}; OpenCV threads {args.threads}; "
              f"{args.samples} samples x {args.rounds} interleaved rounds per arm")

        def ours(i: int, rng: np.random.Generator) -> Any:
            return cached[(i % n, 0, i)]

        def ours_uncached(i: int, rng: np.random.Generator) -> Any:
            return dataset[(i % n, 0, i)]

        def theirs(i: int, rng: np.random.Generator) -> Any:
            record = records[i % n]
            return paddleseg(record.img_path, record.label_path, rng)

        for i in range(n):  # fill the cache first: only the steady state is timed
            cached[(i, 0, i)]
        full = {"ours": ours, "ours, cache_images=False": ours_uncached,
                "PaddleSeg way": theirs}
        rates = compare(full, args.samples, args.rounds)
        ratio = report("1. full pipeline (read + transforms), samples/s:", rates, "ours",
                       "PaddleSeg way")
        uncached = (statistics.median(rates["ours, cache_images=False"])
                    / statistics.median(rates["PaddleSeg way"]))
        print(f"  ours, cache_images=False / PaddleSeg way: {uncached:.2f}x")

        def ours_read(i: int, rng: np.random.Generator) -> Any:
            return dataset.load(i % n, with_fov=False)

        def theirs_read(i: int, rng: np.random.Generator) -> Any:
            record = records[i % n]
            return PaddleSegWay.read(record.img_path, record.label_path)

        rates = compare({"ours": ours_read, "PaddleSeg way": theirs_read}, args.samples,
                        args.rounds)
        report("2. reading only (decode + checks), samples/s:", rates, "ours", "PaddleSeg way")

        decoded = [(read_image(r.img_path), read_label(r.label_path)) for r in records]
        decoded_ps = [PaddleSegWay.read(r.img_path, r.label_path) for r in records]
        pipeline = dataset.transforms

        def ours_mem(i: int, rng: np.random.Generator) -> Any:
            img, label = decoded[i % n]
            return pipeline({"img": img, "label": label, "trans_info": []}, rng)

        def theirs_mem(i: int, rng: np.random.Generator) -> Any:
            im, label = decoded_ps[i % n]
            return paddleseg.transform(im, label, rng)

        rates = compare({"ours": ours_mem, "PaddleSeg way": theirs_mem}, args.samples,
                        args.rounds)
        report("3. transforms only (decoded images in memory), samples/s:", rates, "ours",
               "PaddleSeg way")
        verdict = "meets" if ratio >= 2 else "misses"
        print(f"full-pipeline ratio {ratio:.2f}x {verdict} the 2x target")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
