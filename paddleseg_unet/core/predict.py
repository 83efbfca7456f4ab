"""Predict masks for image files and write them as pictures.

Per image ``NAME`` (its path relative to the folder or list it came from, without the
extension) under ``save_dir``:

- ``pseudo_color_prediction/NAME.png``: a palette PNG whose pixel values are the class ids
  and whose palette is the fixed colour map of :mod:`paddleseg_unet.utils.visualize`;
- ``added_prediction/NAME.jpg``: the colour mask blended over the image (same size);
- with ``save_prob`` (two-class models): ``probability/NAME.png``, the foreground
  probability as a 16-bit grey PNG (value / 65535 = probability);
- when a label is known (``tools/val.py --save_dir``, two-class tasks):
  ``error_map/NAME.png``, the image with true positives green, false positives red and
  false negatives blue.

Unreadable images are skipped with a warning and listed in the returned summary.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from paddleseg_unet.core.infer import InferenceOptions, aug_inference
from paddleseg_unet.datasets.image_io import DatasetError, read_image
from paddleseg_unet.utils.logger import logger
from paddleseg_unet.utils.visualize import (blend, colorize, error_map, get_color_map,
                                            save_palette_png, save_prob_png, save_rgb_image)

__all__ = ["PredictError", "PredictSummary", "PredictionWriter", "IMAGE_EXTENSIONS",
           "collect_images", "output_names", "predict_image", "predict", "probabilities"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm",
                    ".pbm", ".webp", ".jp2")
PSEUDO_DIR, ADDED_DIR, PROB_DIR = "pseudo_color_prediction", "added_prediction", "probability"
ERROR_DIR = "error_map"


class PredictError(ValueError):
    """Bad prediction input (no images found, a list file that cannot be read, ...)."""


@dataclass
class PredictSummary:
    """What :func:`predict` did: images written and the ones skipped, with the reason."""

    save_dir: str
    written: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"Predicted {len(self.written)} image(s) into {self.save_dir}"
        if self.failed:
            text += f"; {len(self.failed)} skipped:\n" + "\n".join(
                f"  {path}: {reason}" for path, reason in self.failed)
        return text


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _read_list(list_path: str) -> List[str]:
    """Image paths of a text list: the first field of each non-blank line (so a dataset
    list of 'image label' lines works too); relative paths are taken from the working
    directory when they exist there, else from the list's folder."""
    try:
        with open(list_path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PredictError(f"cannot read the image list {list_path}: {e}") from None
    base = os.path.dirname(os.path.abspath(list_path))
    paths = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        path = line.split()[0]
        if not os.path.isabs(path) and not os.path.exists(path):
            path = os.path.join(base, path)
        paths.append(path)
    return paths


def collect_images(image_path: str) -> Tuple[List[str], Optional[str]]:
    """``(image files, folder their names are relative to)`` for ``--image_path``: an image
    file, a folder (searched recursively for image extensions) or a text list (``.txt``,
    one path per line). The folder is None for a single file or a list."""
    image_path = os.fspath(image_path)
    if os.path.isdir(image_path):
        found = sorted(os.path.join(root, name) for root, _, names in os.walk(image_path)
                       for name in names if _is_image(name) and not name.startswith("."))
        if not found:
            raise PredictError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the folder "
                               f"{image_path}")
        return found, image_path
    if not os.path.isfile(image_path):
        raise PredictError(f"--image_path {image_path} does not exist (give an image, a "
                           f"folder of images or a .txt list of image paths)")
    if image_path.lower().endswith(".txt"):
        found = _read_list(image_path)
        if not found:
            raise PredictError(f"the image list {image_path} has no entries")
        return found, None
    return [image_path], None


def output_names(paths: Sequence[str], image_dir: Optional[str] = None) -> List[str]:
    """Output name per image: its path relative to ``image_dir`` (else its file name)
    without extension. Names that would collide (``a.png`` and ``a.jpg``) keep their
    extension instead (``a.png``, ``a.jpg``)."""
    def rel(path: str) -> str:
        if image_dir is not None:
            return os.path.relpath(path, image_dir)
        return os.path.basename(path)

    rels = [rel(p) for p in paths]
    stems = [os.path.splitext(r)[0] for r in rels]
    counts: Dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else r for stem, r in zip(stems, rels)]


class PredictionWriter:
    """Writes the pictures of one prediction under ``save_dir`` (see the module docstring);
    ``predict`` and ``tools/val.py --save_dir`` share it, so both write the same files."""

    def __init__(self, save_dir: str, color_map: Optional[np.ndarray] = None,
                 overlay_weight: float = 0.4, overlay_background: bool = True,
                 save_prob: bool = False, foreground: int = 1,
                 ignore_index: int = 255) -> None:
        self.save_dir = save_dir
        self.color_map = color_map
        self.overlay_weight = overlay_weight
        self.overlay_background = overlay_background
        self.save_prob = save_prob
        self.foreground = foreground
        self.ignore_index = ignore_index

    @classmethod
    def for_dataset(cls, save_dir: str, dataset: Any, save_prob: bool = False
                    ) -> "PredictionWriter":
        """A writer with the dataset's colours, foreground class and ignore value."""
        meta = dataset.meta
        return cls(save_dir, np.asarray(meta.palette, dtype=np.uint8),
                   overlay_background=meta.class_names[0] != "background",
                   save_prob=save_prob, foreground=meta.foreground_class or 1,
                   ignore_index=getattr(dataset, "ignore_index", 255))

    def on_image(self, item: Dict[str, Any]) -> None:
        """``evaluate``'s per-image callback: the pictures of one evaluated image."""
        pred, prob = probabilities(item["logits"])
        label = item["label"]
        self.write(item["name"], read_image(item["img_path"]), pred, prob,
                   label.numpy().reshape(pred.shape) if label is not None else None)

    def write(self, name: str, image: np.ndarray, pred: np.ndarray, prob: np.ndarray,
              label: Optional[np.ndarray] = None) -> None:
        if self.save_prob and prob.shape[0] != 2:
            raise PredictError(f"--save_prob needs a two-class model; this one returns "
                               f"{prob.shape[0]} classes")
        colors = self.color_map if self.color_map is not None else get_color_map(prob.shape[0])
        save_palette_png(pred, colors, os.path.join(self.save_dir, PSEUDO_DIR, name + ".png"))
        overlay = blend(image, colorize(pred, colors), self.overlay_weight,
                        mask=None if self.overlay_background else pred != 0)
        save_rgb_image(overlay, os.path.join(self.save_dir, ADDED_DIR, name + ".jpg"))
        if self.save_prob:
            save_prob_png(prob[1], os.path.join(self.save_dir, PROB_DIR, name + ".png"))
        if label is not None and prob.shape[0] == 2:
            save_rgb_image(error_map(image, pred, label, self.foreground, self.ignore_index),
                           os.path.join(self.save_dir, ERROR_DIR, name + ".png"))


def probabilities(logits: paddle.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """``(class ids HxW int32, probabilities KxHxW float32)`` of ``[1, K, H, W]`` logits."""
    prob = F.softmax(logits.astype("float32"), axis=1)[0]
    pred = paddle.argmax(logits[0], axis=0).astype("int32")
    return pred.numpy(), prob.numpy()


@paddle.no_grad()
def predict_image(model: Callable[..., Any], transforms: Callable, image: np.ndarray,
                  num_classes: Optional[int] = None, img_path: str = "<in memory>",
                  inference: Optional[InferenceOptions] = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """``(class ids HxW int32, probabilities KxHxW float32)`` for one RGB uint8 image.

    ``transforms`` is the val pipeline (a Compose ending in a CHW float32 image);
    ``inference`` says how (flips, scales, sliding windows). The result has the input's
    size.
    """
    h, w = image.shape[:2]
    sample = transforms({"img": image, "trans_info": [], "img_path": img_path},
                        np.random.default_rng(0))  # val pipelines draw nothing; rng for API
    x = paddle.to_tensor(np.ascontiguousarray(sample["img"])[None], dtype="float32")
    logits = aug_inference(model, x, inference, trans_info=sample.get("trans_info"),
                           ori_shape=(h, w))
    if num_classes is not None and int(logits.shape[1]) != num_classes:
        raise PredictError(f"the model returns {logits.shape[1]} channels but the config says "
                           f"num_classes {num_classes}")
    return probabilities(logits)


def predict(model: Callable[..., Any], transforms: Callable, image_list: Sequence[str],
            save_dir: str, *, image_dir: Optional[str] = None, num_classes: Optional[int] = None,
            color_map: Optional[np.ndarray] = None, overlay_weight: float = 0.4,
            overlay_background: bool = True, save_prob: bool = False,
            inference: Optional[InferenceOptions] = None,
            progress: bool = True) -> PredictSummary:
    """Predict every image of ``image_list`` and write the pictures (see module docstring).

    ``model``: a ``paddle.nn.Layer`` (put in eval mode here) or any forward callable, e.g.
    a backend of :mod:`paddleseg_unet.core.backends`. ``color_map``: ``[K, 3]`` uint8
    (default: the generic map). ``overlay_weight``: weight of the colour mask in the
    overlay. ``overlay_background=False`` leaves class-0 pixels as in the image.
    """
    if isinstance(model, paddle.nn.Layer):
        model.eval()
    if save_prob and num_classes is not None and num_classes != 2:
        raise PredictError(f"--save_prob writes the foreground probability of a two-class "
                           f"model; this one has {num_classes} classes")
    if save_prob and getattr(model, "output_op", None) == "argmax":
        raise PredictError(f"--save_prob needs probabilities, but {model} was exported with "
                           f"--output_op argmax (class ids only); re-export with --output_op "
                           f"softmax or none")
    names = output_names(image_list, image_dir)
    summary = PredictSummary(save_dir=save_dir)
    writer = PredictionWriter(save_dir, color_map, overlay_weight, overlay_background,
                              save_prob)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(image_list), unit="img", desc="predict", dynamic_ncols=True)
    for path, name in zip(image_list, names):
        try:
            image = read_image(path)
        except DatasetError as e:
            logger.warning(f"Skipping an unreadable image: {e}")
            summary.failed.append((path, str(e)))
        else:
            pred, prob = predict_image(model, transforms, image, num_classes, path, inference)
            writer.write(name, image, pred, prob)
            summary.written.append(path)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if summary.failed:
        logger.warning(str(summary))
    else:
        logger.info(str(summary))
    return summary
