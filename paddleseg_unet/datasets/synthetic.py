"""SyntheticVessels: a procedurally generated, fundus-like vessel segmentation set.

Each image is drawn from its own generator ``SeedSequence([seed, i, tag])`` (so image i
does not depend on how many images are requested):

- a dark background with a circular field of view (FOV);
- an orange-red retina with smooth multi-scale texture, an illumination gradient,
  vignetting towards the FOV rim, a bright optic disc and a darker macula;
- a vessel tree growing from the optic disc: two arcades curving around the macula,
  nasal trunks and a few extra ones, each a tortuous random walk that tapers and
  branches recursively into thinner children, grown breadth-first (thick vessels first)
  until the vessels cover a drawn target fraction (9-11.5 %) of the FOV;
- mild blur and sensor noise.

Vessels are rasterised at 4x resolution and area-downsampled into a coverage map:
the image darkens by coverage (thin vessels look faint, as in real photographs) and
the label is ``coverage >= 0.5`` inside the FOV, so label and image agree.

The set is generated once into the converted retina layout (images/annotations/fov
+ lists) under a temporary name and renamed into place, then read by the retina code.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from typing import List, Optional, Tuple

import cv2
import numpy as np

from paddleseg_unet.cvlibs.registry import DATASETS
from paddleseg_unet.datasets.dataset import TransformsArg
from paddleseg_unet.datasets.image_io import DatasetError
from paddleseg_unet.datasets.retina import (RetinaDataset, default_data_home, install_dir,
                                            is_prepared_root)

__all__ = ["SyntheticVessels", "generate_fundus", "generate_synthetic_vessels",
           "GENERATOR_VERSION"]

GENERATOR_VERSION = 1  # bump when the drawing changes: cached sets are then regenerated
_STREAM_TAG = 0x53594E54  # keeps image streams apart from other SeedSequence users
_SUPERSAMPLE = 4
_SHIFT = 4  # cv2 sub-pixel bits for vessel coordinates


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise: a cells x cells grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


class _VesselPainter:
    """Grows and rasterises a vessel tree at ``_SUPERSAMPLE``x resolution.

    A branch is ``(x, y, angle, width, length, bias, steer, depth)``: it starts at (x, y),
    turns by ``bias`` per step (the arcades' sweep around the macula) plus correlated
    noise (tortuosity), and is pulled with strength ``steer`` towards the direction
    pointing away from the optic disc, so vessels spread to the periphery.
    """

    def __init__(self, rng: np.random.Generator, size: int, center: Tuple[float, float],
                 radius: float, disc: Tuple[float, float]) -> None:
        self.rng = rng
        self.size = size
        self.center = center
        self.radius = radius
        self.disc = disc
        self.step = size / 96.0
        self.canvas = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), np.uint8)
        self.fov_area = math.pi * radius * radius * _SUPERSAMPLE ** 2

    def covered(self) -> float:
        return cv2.countNonZero(self.canvas) / self.fov_area

    def walk(self, branch: tuple, queue: List[tuple]) -> None:
        """Draw one branch; append the children it spawns to ``queue``."""
        x, y, angle, width, length, bias, steer, depth = branch
        rng, step = self.rng, self.step
        n_steps = max(2, int(length / step))
        noise = rng.normal(0.0, 0.012 + 0.012 / max(width, 0.5), n_steps)  # thin: wigglier
        draws = rng.random((n_steps, 5))
        limit2 = (self.radius * 0.985) ** 2
        scale = _SUPERSAMPLE * (1 << _SHIFT)
        curl = 0.0
        for i in range(n_steps):
            curl = 0.85 * curl + noise[i]
            outward = math.atan2(y - self.disc[1], x - self.disc[0])
            pull = (outward - angle + math.pi) % (2 * math.pi) - math.pi
            angle += curl + bias + steer * pull
            nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
            if (nx - self.center[0]) ** 2 + (ny - self.center[1]) ** 2 > limit2:
                break
            taper = width * (1.0 - 0.4 * i / n_steps)
            cv2.line(self.canvas, (int(x * scale), int(y * scale)),
                     (int(nx * scale), int(ny * scale)), 255,
                     max(1, int(taper * _SUPERSAMPLE + 0.5)), cv2.LINE_8, _SHIFT)
            x, y = nx, ny
            remaining = length - i * step
            if depth < 6 and taper > 0.9 and remaining > 6 * step and draws[i, 0] < 0.08:
                side = 1.0 if draws[i, 1] < 0.5 else -1.0
                queue.append((x, y, angle + side * (0.5 + 0.6 * draws[i, 2]),
                              taper * (0.5 + 0.25 * draws[i, 3]),
                              self.radius * (0.3 + 0.5 * draws[i, 4]), 0.0, 0.03, depth + 1))
                width *= 0.94  # a parent thins after giving off a branch

    def grow(self, side: float, target: float) -> None:
        """Trunks from the disc, grown breadth-first until ``target`` coverage."""
        rng, r = self.rng, self.radius
        w0 = self.size * rng.uniform(0.016, 0.02)
        arc = 1.3 * self.step / r  # an arcade turns ~1.3 rad per radius travelled
        deg = math.pi / 180.0
        up, down = -math.pi / 2, math.pi / 2
        trunks = [  # angle, width, length, curvature bias, steer
            (up - side * rng.uniform(15, 30) * deg, w0, 1.7 * r, -side * arc, 0.0),
            (down + side * rng.uniform(15, 30) * deg, w0 * rng.uniform(0.9, 1.0), 1.7 * r,
             side * arc, 0.0),
            (up + side * rng.uniform(25, 45) * deg, w0 * 0.75, 1.0 * r, 0.0, 0.02),
            (down - side * rng.uniform(25, 45) * deg, w0 * 0.75, 1.0 * r, 0.0, 0.02),
            ((0.5 - 0.5 * side) * math.pi + rng.uniform(-20, 20) * deg, w0 * 0.55, 0.8 * r,
             0.0, 0.02),
        ]
        queue = [(self.disc[0] + rng.normal(0, 0.02 * r), self.disc[1] + rng.normal(0, 0.02 * r),
                  a, w, length, b, st, 0) for a, w, length, b, st in trunks]
        extra = 0
        while self.covered() < target:
            if not queue:
                if extra >= 12:
                    break
                # More trunks from the disc if the tree ended below the target.
                extra += 1
                queue.append((self.disc[0], self.disc[1], rng.uniform(-math.pi, math.pi),
                              w0 * rng.uniform(0.4, 0.7), r * rng.uniform(0.6, 1.2), 0.0,
                              0.03, 1))
            self.walk(queue.pop(0), queue)

    def coverage(self) -> np.ndarray:
        """Per-pixel vessel coverage in [0, 1] at the output size."""
        small = cv2.resize(self.canvas, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32) / 255.0


def generate_fundus(rng: np.random.Generator, size: int = 256
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic fundus: (RGB uint8 HxWx3, vessel label uint8 0/1, FOV uint8 0/1)."""
    s = size
    center = (s / 2 + rng.uniform(-0.01, 0.01) * s, s / 2 + rng.uniform(-0.01, 0.01) * s)
    radius = s * rng.uniform(0.44, 0.47)
    yy, xx = np.ogrid[0:s, 0:s]
    yy, xx = yy.astype(np.float32) + 0.5, xx.astype(np.float32) + 0.5
    dx, dy = xx - center[0], yy - center[1]
    rho = np.sqrt(dx * dx + dy * dy) / radius
    fov = (rho <= 1.0).astype(np.uint8)

    side = float(rng.choice((-1.0, 1.0)))  # optic disc on the right (+1) or left (-1)
    disc = np.array([center[0] + side * radius * rng.uniform(0.5, 0.62),
                     center[1] + radius * rng.uniform(-0.08, 0.08)])
    macula = np.array([center[0] - side * radius * rng.uniform(0.05, 0.15),
                       center[1] + radius * rng.uniform(-0.05, 0.05)])

    # Retina colour with texture, illumination gradient and vignetting.
    base = np.array([rng.uniform(185, 225), rng.uniform(80, 115), rng.uniform(30, 60)],
                    np.float32) * rng.uniform(0.8, 1.05)
    texture = 1.0 + 0.05 * _smooth_noise(rng, s, 6) + 0.03 * _smooth_noise(rng, s, 24)
    theta = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 + rng.uniform(0.1, 0.25) * (dx * math.cos(theta) + dy * math.sin(theta)) / radius
    vignette = 1.0 - rng.uniform(0.3, 0.45) * np.clip(rho, 0, 1) ** 2.5
    shade = (texture * gradient * vignette)[..., None]
    img = base[None, None, :] * shade

    # Macula: a diffuse darker area; optic disc: a bright, flat-topped yellowish spot.
    d_mac = np.hypot(xx - macula[0], yy - macula[1]) / (radius * 0.18)
    img *= (1.0 - rng.uniform(0.15, 0.3) * np.exp(-d_mac ** 2))[..., None]
    disc_r = radius * rng.uniform(0.1, 0.13)
    d_disc = np.hypot(xx - disc[0], yy - disc[1]) / disc_r
    bright = np.exp(-d_disc ** 4)[..., None] * rng.uniform(0.75, 0.9)
    disc_colour = np.array([255, rng.uniform(205, 235), rng.uniform(140, 180)], np.float32)
    img = img * (1 - bright) + disc_colour * bright
    cup = np.exp(-(d_disc / 0.45) ** 2)[..., None] * 0.5
    img = img * (1 - cup) + np.array([255, 245, 215], np.float32) * cup

    painter = _VesselPainter(rng, s, center, radius, (float(disc[0]), float(disc[1])))
    painter.grow(side, target=rng.uniform(0.09, 0.115))
    coverage = painter.coverage()
    darkness = np.array([0.38, 0.6, 0.5], np.float32) * rng.uniform(0.85, 1.05)
    img *= 1.0 - coverage[..., None] * darkness

    # Camera: soft rim, slight blur, sensor noise; near-black outside the FOV.
    rim = np.clip((1.0 - rho) * radius / 1.5, 0, 1)[..., None]
    img = img * rim + 4.0 * (1 - rim)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2.0, 4.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    label = ((coverage >= 0.5) & (fov > 0)).astype(np.uint8)
    return img, label, fov


def _params_dirname(num_images: int, num_val: int, image_size: int, seed: int) -> str:
    return (f"synthetic_vessels_n{num_images}_val{num_val}_s{image_size}_seed{seed}"
            f"_v{GENERATOR_VERSION}")


def generate_synthetic_vessels(root: str, num_images: int = 40, num_val: int = 10,
                               image_size: int = 256, seed: int = 0) -> str:
    """Write the set to ``root`` (converted retina layout) unless it is already there.

    Writes go to a unique temporary sibling folder renamed to ``root`` when complete,
    so concurrent processes never see a partial set; the loser of a race discards its
    copy. Images 0..num_images-num_val-1 are 'train', the rest 'val'.
    """
    meta = {"generator_version": GENERATOR_VERSION, "num_images": num_images,
            "num_val": num_val, "image_size": image_size, "seed": seed}
    if is_prepared_root(root):
        _check_meta(root, meta)
        return root
    if os.path.isdir(root) and os.listdir(root):
        raise DatasetError(f"SyntheticVessels: {root} exists, is not empty and holds no "
                           "train_list.txt/val_list.txt; choose another dataset_root or "
                           "remove it.")
    parent = os.path.dirname(os.path.abspath(root))
    tmp = os.path.join(parent, f".{os.path.basename(root)}.tmp-{os.getpid()}-"
                               f"{uuid.uuid4().hex[:8]}")
    try:
        lists = {"train": [], "val": []}
        for i in range(num_images):
            split = "train" if i < num_images - num_val else "val"
            rng = np.random.Generator(np.random.PCG64(
                np.random.SeedSequence([seed, i, _STREAM_TAG])))
            img, label, fov = generate_fundus(rng, image_size)
            name = f"synth_{i:03d}.png"
            for folder, array in (("images", img[..., ::-1]), ("annotations", label),
                                  ("fov", fov)):
                os.makedirs(os.path.join(tmp, folder, split), exist_ok=True)
                path = os.path.join(tmp, folder, split, name)
                if not cv2.imwrite(path, np.ascontiguousarray(array)):
                    raise DatasetError(f"SyntheticVessels: cannot write {path}")
            lists[split].append(f"images/{split}/{name} annotations/{split}/{name}")
        for split, lines in lists.items():
            with open(os.path.join(tmp, f"{split}_list.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        install_dir(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_meta(root: str, meta: dict) -> None:
    path = os.path.join(root, "meta.json")
    try:
        with open(path, "r", encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        raise DatasetError(f"SyntheticVessels: {root} holds a dataset without a readable "
                           "meta.json, so it is not a SyntheticVessels set; choose another "
                           "dataset_root.") from None
    if found != meta:
        raise DatasetError(f"SyntheticVessels: {root} was generated with {found}, not the "
                           f"requested {meta}; choose another dataset_root or remove it.")


@DATASETS.register()
class SyntheticVessels(RetinaDataset):
    """Procedural fundus-like vessel data (2 classes), generated once and cached.

    ``dataset_root`` defaults to ``$PADDLESEG_UNET_HOME`` (or ``~/.paddleseg_unet``)
    ``/datasets/synthetic_vessels_<params>``. ``num_val`` defaults to a quarter of
    ``num_images`` (10 of 40).
    """

    DIRNAME = "synthetic_vessels"

    def __init__(self, dataset_root: Optional[str] = None, transforms: TransformsArg = None,
                 mode: str = "train", num_images: int = 40, num_val: Optional[int] = None,
                 image_size: int = 256, seed: int = 0, edge: bool = False,
                 cache_images: bool = True) -> None:
        if num_val is None:
            num_val = max(1, int(round(num_images / 4)))
        for arg, value, low in (("num_images", num_images, 2), ("num_val", num_val, 1),
                                ("image_size", image_size, 64), ("seed", seed, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DatasetError(f"SyntheticVessels: {arg} must be an integer >= {low}, "
                                   f"got {value!r}")
        if num_val >= num_images:
            raise DatasetError(f"SyntheticVessels: num_val ({num_val}) must be smaller than "
                               f"num_images ({num_images})")
        self.generation = dict(num_images=num_images, num_val=num_val,
                               image_size=image_size, seed=seed)
        super().__init__(dataset_root, transforms, mode, download=False, edge=edge,
                         cache_images=cache_images)

    def _prepare_root(self, dataset_root: Optional[str], download: bool) -> str:
        if dataset_root is None:
            dataset_root = os.path.join(default_data_home(),
                                        _params_dirname(**self.generation))
        return generate_synthetic_vessels(dataset_root, **self.generation)
