"""Pictures: colour maps, palette PNGs, overlays, and training curves.

Colours come from the dataset's metadata (``DatasetMeta.palette``: fixed per class, so a
class keeps its colour from run to run and tool to tool). Where a dataset defines none, the
PASCAL VOC bit-interleaved map applies (class 0 black, 1 (128, 0, 0), 2 (0, 128, 0),
3 (128, 128, 0), 4 (0, 0, 128), ...), the map PaddleSeg uses too: class ``c`` gets, for
each bit triple ``(b0, b1, b2)`` of ``c`` taken from the lowest up, bit ``7 - i`` of
R/G/B set from ``b0``/``b1``/``b2`` of the ``i``-th triple.

Every file written here is written atomically (temporary name, then ``os.replace``).
"""
from __future__ import annotations

import io
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from paddleseg_unet.utils.io import atomic_write_bytes

__all__ = [
    "VisualizeError", "voc_color_map", "get_color_map", "ERROR_COLORS", "error_map",
    "colorize", "blend", "save_palette_png", "save_rgb_image",
    "save_prob_png", "Curves", "parse_train_log", "read_vdl_log", "read_training_curves",
    "plot_training_curves",
]


class VisualizeError(ValueError):
    """Bad input to a drawing or log-reading function (the message says what to fix)."""


MAX_PALETTE_CLASSES = 256  # a palette PNG has 8-bit indices


# ----------------------------------------------------------------------------- colours
def voc_color_map(num_classes: int) -> np.ndarray:
    """The PASCAL VOC bit-interleaved colour map, ``[num_classes, 3]`` uint8 RGB."""
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for c in range(num_classes):
        value, shift = c, 7
        while value and shift >= 0:
            for channel in range(3):
                colors[c, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colors


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 1 <= num_classes <= MAX_PALETTE_CLASSES:
        raise VisualizeError(f"num_classes must be an int in 1..{MAX_PALETTE_CLASSES}, "
                             f"got {num_classes!r}")
    return int(num_classes)


def get_color_map(num_classes: int, palette: Optional[Sequence[Sequence[int]]] = None
                  ) -> np.ndarray:
    """``[num_classes, 3]`` uint8 RGB: ``palette``'s colours first, the VOC map after."""
    num_classes = _check_num_classes(num_classes)
    colors = voc_color_map(num_classes)
    known = np.asarray(list(palette or [])[:num_classes], dtype=np.uint8).reshape(-1, 3)
    colors[:len(known)] = known
    return colors


def _check_pred(pred: np.ndarray, color_map: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim != 2 or not np.issubdtype(pred.dtype, np.integer):
        raise VisualizeError(f"a prediction must be an HxW integer array of class ids, got "
                             f"{pred.dtype} {pred.shape}")
    if pred.size and (pred.min() < 0 or pred.max() >= len(color_map)):
        raise VisualizeError(f"prediction holds class ids {int(pred.min())}..{int(pred.max())} "
                             f"but the colour map has {len(color_map)} colours")
    return pred


def colorize(pred: np.ndarray, color_map: np.ndarray) -> np.ndarray:
    """``HxW`` class ids -> ``HxWx3`` uint8 RGB picture."""
    color_map = np.asarray(color_map, dtype=np.uint8)
    return color_map[_check_pred(pred, color_map)]


def blend(image: np.ndarray, color: np.ndarray, weight: float = 0.4,
          mask: Optional[np.ndarray] = None) -> np.ndarray:
    """``(1 - weight) * image + weight * color`` (uint8 RGB, same size), rounded.

    Where ``mask`` is given and False the image is kept as it is (e.g. background pixels
    of a binary task, so thin structures stand out).
    """
    image, color = np.asarray(image), np.asarray(color)
    if image.shape != color.shape or image.ndim != 3 or image.shape[2] != 3:
        raise VisualizeError(f"blend needs two HxWx3 pictures of one size, got {image.shape} "
                             f"and {color.shape}")
    if not 0.0 <= weight <= 1.0:
        raise VisualizeError(f"the overlay weight must be in [0, 1], got {weight!r}")
    mixed = (1.0 - weight) * image.astype(np.float32) + weight * color.astype(np.float32)
    out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if mask is not None:
        keep = ~np.asarray(mask, dtype=bool)
        out[keep] = image[keep]
    return out


# ----------------------------------------------------------------------------- files
# Error map colours (RGB): where a binary prediction is right or wrong.
ERROR_COLORS = {"true_positive": (0, 255, 0), "false_positive": (255, 0, 0),
                "false_negative": (0, 0, 255)}


def error_map(image: np.ndarray, pred: np.ndarray, label: np.ndarray, foreground: int = 1,
              ignore_index: int = 255) -> np.ndarray:
    """The image with each scored pixel of a binary task painted by outcome: true positive
    green, false positive red, false negative blue (:data:`ERROR_COLORS`); true negatives
    and ignored pixels keep the image."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape or image.shape[:2] != pred.shape:
        raise VisualizeError(f"error map: image {image.shape[:2]}, prediction {pred.shape} and "
                             f"label {label.shape} must have the same size")
    scored = label != ignore_index
    out = np.array(image, dtype=np.uint8, copy=True)
    is_fg, was_fg = pred == foreground, label == foreground
    for key, where in (("true_positive", is_fg & was_fg), ("false_positive", is_fg & ~was_fg),
                       ("false_negative", ~is_fg & was_fg)):
        out[where & scored] = ERROR_COLORS[key]
    return out


def save_palette_png(pred: np.ndarray, color_map: np.ndarray, path: str) -> None:
    """Save class ids as a palette ("P" mode) PNG: pixel values are the class ids, the
    palette holds ``color_map`` (unused entries black)."""
    from PIL import Image

    color_map = np.asarray(color_map, dtype=np.uint8)
    if len(color_map) > MAX_PALETTE_CLASSES:
        raise VisualizeError(f"a palette PNG holds at most {MAX_PALETTE_CLASSES} classes, "
                             f"got a colour map of {len(color_map)}")
    pred = _check_pred(pred, color_map)
    palette = np.zeros((MAX_PALETTE_CLASSES, 3), dtype=np.uint8)
    palette[:len(color_map)] = color_map
    picture = Image.fromarray(pred.astype(np.uint8), mode="P")
    picture.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _encode(img: np.ndarray, ext: str, params: Sequence[int] = ()) -> bytes:
    ok, data = cv2.imencode(ext, img, list(params))
    if not ok:
        raise VisualizeError(f"OpenCV could not encode a {img.dtype} {img.shape} picture as {ext}")
    return data.tobytes()


def save_rgb_image(rgb: np.ndarray, path: str, jpeg_quality: int = 95) -> None:
    """Save an HxWx3 uint8 RGB picture; the format follows the extension of ``path``.

    JPEGs keep full-resolution colour (4:4:4): the usual 4:2:0 subsampling smears the
    colour of one-pixel-wide structures such as retinal vessels into their neighbours.
    """
    ext = os.path.splitext(path)[1].lower() or ".png"
    params: List[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # OpenCV >= 4.5.5
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    atomic_write_bytes(path, _encode(bgr, ext, params))


def save_prob_png(prob: np.ndarray, path: str) -> None:
    """Save an HxW probability map in [0, 1] as a 16-bit grey PNG: value = round(p * 65535)."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2:
        raise VisualizeError(f"a probability map must be HxW, got shape {prob.shape}")
    scaled = np.rint(np.clip(prob, 0.0, 1.0) * 65535.0).astype(np.uint16)
    atomic_write_bytes(path, _encode(scaled, ".png"))


# ----------------------------------------------------------------------------- curves
# {"train": {"loss": [(iter, value), ...], "lr": [...]}, "eval": {"mIoU": [...], ...}}
Curves = Dict[str, Dict[str, List[Tuple[int, float]]]]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_PAIR = re.compile(r"([A-Za-z_#][\w#]*):\s*(" + _NUMBER + r")(?:/(\d+))?", re.IGNORECASE)
_TRAIN_SKIP = {"epoch", "iter"}
_EVAL_SKIP = {"#Images"}


def _pairs(text: str) -> Dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in _PAIR.finditer(text)}


def parse_train_log(path: str) -> Curves:
    """Curves from a text training log (``train.log`` or a console capture).

    ``[TRAIN] epoch: E, iter: i/N, loss: x, lr: x, ...`` lines give every ``key: number``
    field but epoch/iter, at iteration ``i``; ``[EVAL] #Images: N mIoU: x Acc: x ...``
    lines give the metrics at the iteration of the last ``[TRAIN]`` line before them
    (the evaluation that follows it), or 1, 2, ... when no ``[TRAIN]`` line came first.
    """
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        raise VisualizeError(f"cannot read the training log {path}: {e.strerror or e}") from None
    curves: Curves = {"train": {}, "eval": {}}
    last_iter: Optional[int] = None
    evals = 0
    for line in lines:
        if "[TRAIN]" in line:
            fields = _pairs(line.split("[TRAIN]", 1)[1].split("|", 1)[0])
            if "iter" not in fields:
                continue
            last_iter = int(fields["iter"])
            for key, value in fields.items():
                if key not in _TRAIN_SKIP:
                    curves["train"].setdefault(key, []).append((last_iter, value))
        elif "[EVAL]" in line and "#Images" in line:
            evals += 1
            step = last_iter if last_iter is not None else evals
            for key, value in _pairs(line.split("[EVAL]", 1)[1]).items():
                if key not in _EVAL_SKIP:
                    curves["eval"].setdefault(key, []).append((step, value))
    if not curves["train"] and not curves["eval"]:
        raise VisualizeError(f"{path} holds no '[TRAIN] ... iter: i/N, loss: x' or "
                             f"'[EVAL] #Images: N mIoU: x' lines; is it a training log?")
    return curves


def read_vdl_log(logdir: str) -> Curves:
    """Curves from a VisualDL log folder: scalar tags ``Train/<key>`` and
    ``Evaluate/<key>`` (what ``tools/train.py --use_vdl`` writes)."""
    from visualdl import LogReader

    files = [os.path.join(root, name) for root, _, names in os.walk(logdir)
             for name in names if name.startswith("vdlrecords.")]
    if not files:
        raise VisualizeError(f"{logdir} holds no VisualDL record (vdlrecords.*) file; pass "
                             f"the run's vdl_log folder or its train.log")
    curves: Curves = {"train": {}, "eval": {}}
    for file in sorted(files):  # several files = a resumed run; later ones extend it
        reader = LogReader(file_path=file)
        for tag in reader.get_tags().get("scalar", []):
            group, _, key = tag.partition("/")
            section = {"Train": "train", "Evaluate": "eval"}.get(group)
            if section is None or not key:
                continue
            points = [(int(r.id), float(r.value)) for r in reader.get_data("scalar", tag)]
            curves[section].setdefault(key, []).extend(points)
    for section in curves.values():
        for key, points in section.items():
            section[key] = sorted(dict(points).items())  # one value per step, in order
    if not curves["train"] and not curves["eval"]:
        raise VisualizeError(f"the VisualDL log in {logdir} has no Train/* or Evaluate/* "
                             f"scalars")
    return curves


def read_training_curves(path: str) -> Curves:
    """A VisualDL folder (or a ``vdlrecords.*`` file's folder) or a text log."""
    if os.path.isdir(path):
        return read_vdl_log(path)
    if os.path.isfile(path):
        if os.path.basename(path).startswith("vdlrecords."):
            return read_vdl_log(os.path.dirname(path) or ".")
        return parse_train_log(path)
    raise VisualizeError(f"training log not found: {path} (give a train.log file or a "
                         f"vdl_log folder)")


# Evaluation metrics drawn, in this order, by any of their spellings (text log / VisualDL).
_METRICS = (("mIoU", ("mIoU", "miou")), ("Acc", ("Acc", "acc")), ("Kappa", ("Kappa", "kappa")),
            ("Dice", ("Dice", "mdice")), ("AUC-ROC", ("Auc_roc", "auc_roc")))


def _finite(points: List[Tuple[int, float]]) -> Tuple[List[int], List[float]]:
    kept = [(s, v) for s, v in points if math.isfinite(v)]
    return [s for s, _ in kept], [v for _, v in kept]


def plot_training_curves(curves: Curves, out_path: str, title: Optional[str] = None,
                         smooth: int = 1) -> List[str]:
    """Draw loss, learning rate and evaluation metrics over iterations into one PNG.

    ``smooth`` > 1 adds a moving average of that many points over the raw loss.
    Returns the names of the panels drawn.
    """
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    train, evals = curves.get("train", {}), curves.get("eval", {})
    metrics = [(label, evals[k]) for label, keys in _METRICS for k in keys if k in evals]
    panels = [name for name, present in (("loss", "loss" in train), ("lr", "lr" in train),
                                         ("metrics", bool(metrics))) if present]
    if not panels:
        raise VisualizeError("nothing to draw: the log has no loss, lr or evaluation metric")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "loss":
            steps, values = _finite(train["loss"])
            ax.plot(steps, values, lw=0.8, alpha=0.5 if smooth > 1 else 1.0, label="loss")
            if smooth > 1 and len(values) >= smooth:
                kernel = np.ones(smooth) / smooth
                ax.plot(steps[smooth - 1:], np.convolve(values, kernel, mode="valid"), lw=1.5,
                        label=f"moving average ({smooth})")
                ax.legend()
            ax.set_title("training loss")
        elif panel == "lr":
            steps, values = _finite(train["lr"])
            ax.plot(steps, values, lw=1.2, color="tab:green")
            ax.set_title("learning rate")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            for label, points in metrics:
                steps, values = _finite(points)
                ax.plot(steps, values, marker="o", ms=3, lw=1.2, label=label)
            ax.set_title("evaluation")
            ax.legend()
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out_path, buffer.getvalue())
    return panels
