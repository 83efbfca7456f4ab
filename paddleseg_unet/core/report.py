"""Evaluation reports as files: per-image metrics (CSV) and the ROC / precision-recall curves
of a binary task (CSV and PNG), written atomically.

Files under ``tools/val.py --curves DIR``:

- ``curves.csv``: ``threshold, tpr, fpr, precision, recall``, one row per occupied
  probability bucket from the top down, after the "nothing predicted" point (threshold 1).
  Joining the (fpr, tpr) points by straight lines gives the ROC whose area is the reported
  AUC-ROC; the PR points give the reported average precision;
- ``roc.png`` and ``pr.png``: the two curves, with AUC / AP and the best-F1 point.
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from paddleseg_unet.utils.io import atomic_write, atomic_write_bytes

__all__ = ["write_per_image_csv", "write_curves", "CURVE_COLUMNS"]

CURVE_COLUMNS = ("threshold", "tpr", "fpr", "precision", "recall")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return value


def write_per_image_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """One row per image (see :func:`~paddleseg_unet.core.evaluate.per_image_row`); an
    undefined figure (e.g. AUC of an image without vessel pixels) is an empty cell."""
    if not rows:
        raise ValueError("no per-image rows to write")
    with atomic_write(path, "w", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def write_curves(curves: Mapping[str, np.ndarray], out_dir: str,
                 results: Mapping[str, Any]) -> Dict[str, str]:
    """``curves.csv``, ``roc.png`` and ``pr.png`` in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in ("curves.csv", "roc.png", "pr.png")}
    with atomic_write(paths["curves.csv"], "w", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CURVE_COLUMNS)
        columns = [np.asarray(curves[c], dtype=np.float64) for c in CURVE_COLUMNS]
        for values in zip(*columns):
            writer.writerow([f"{v:.10g}" for v in values])
    _plot(paths["roc.png"], curves["fpr"], curves["tpr"], "false positive rate",
          "true positive rate (sensitivity)",
          f"ROC, AUC {results.get('auc_roc', math.nan):.4f}", diagonal=True,
          point=_best_point(results, "roc"))
    _plot(paths["pr.png"], curves["recall"], curves["precision"], "recall (sensitivity)",
          "precision", f"precision-recall, AP {results.get('average_precision', math.nan):.4f}",
          point=_best_point(results, "pr"))
    return paths


def _best_point(results: Mapping[str, Any], kind: str) -> Any:
    best = results.get("best_f1")
    if not best:
        return None
    xy = ((1.0 - best["specificity"], best["sensitivity"]) if kind == "roc"
          else (best["sensitivity"], best["precision"]))
    return xy, f"best F1 {best['f1']:.4f} (threshold {best['threshold']:.3f})"


def _plot(path: str, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str,
          diagonal: bool = False, point: Any = None) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(x, y, lw=1.5, color="tab:blue")
    if diagonal:
        ax.plot([0, 1], [0, 1], lw=0.8, ls="--", color="grey")
    if point is not None:
        (px, py), label = point
        ax.plot([px], [py], "o", color="tab:red", label=label)
        ax.legend(loc="lower right" if diagonal else "lower left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
