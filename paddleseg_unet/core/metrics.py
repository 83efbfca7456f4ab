"""Segmentation metrics accumulated on the device in constant memory.

Everything that grows with the data set stays on the device as fixed-size int64 counters:

* a KxK confusion matrix ``cm[label, pred]`` (rows: labelled class, columns: predicted class);
* for AUC-ROC, histograms of softmax probabilities split by label: ``bins`` buckets per
  (class, negative/positive). Binary tasks keep one histogram (foreground probability vs
  label 1); K>2 tasks keep one one-vs-rest histogram per class.

``update`` never copies to the host (no ``.numpy()``, no data-dependent shapes), so it does not
stall a GPU; only ``compute``/``state`` read the counters back. It works through a batch in
pieces of at most ``chunk_pixels`` pixels (whole images when they fit, else bands of rows),
so its temporaries are bounded too: scoring one 8-megapixel HRF image costs no more memory
than scoring a small one.

Conventions (the project's PaddleSeg-compatibility contract), with I_i, P_i, L_i the
correctly predicted, predicted and labelled pixels of class i over the whole set:

* IoU_i = I_i / (P_i + L_i - I_i), 1.0 when the union is empty (PaddleSeg's own code uses 0.0
  there; it only matters for a class absent from both labels and predictions); mIoU = mean
  over all classes.
* Dice_i = 2 I_i / (P_i + L_i), 0.0 when P_i + L_i = 0; mDice = mean over all classes.
* Acc = sum(I) / sum(P); precision_i = I_i / P_i (0.0 when P_i = 0, as PaddleSeg);
  recall_i = I_i / L_i (0.0 when L_i = 0, as PaddleSeg).
* Kappa = (po - pe) / (1 - pe), po = sum(I)/T, pe = sum(P_i L_i)/T^2; NaN when pe = 1
  (all pixels labelled and predicted as one class), as sklearn's cohen_kappa_score.
* AUC-ROC: Mann-Whitney statistic of the histogram, pairs inside one bucket counted 1/2
  (the same number as the trapezoid ROC area walked from the top bucket down). Pairs in
  different buckets are ordered exactly (bucketing is monotone), so
  |AUC_hist - AUC_exact| <= sum_b pos_b neg_b / (2 P N) = ``auc_error_bound``.
  A class without positive or without negative scored pixels has AUC NaN; the K>2 macro
  AUC averages the classes where it is defined (sklearn would raise instead).

Scored pixels: label != ignore_index, inside the optional field-of-view mask, and label in
0..K-1. Labels outside 0..K-1 (other than ignore_index) are counted separately and make
``compute`` raise :class:`MetricError`, since they mean the label files do not fit the config.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

__all__ = ["MetricError", "SegMetricAccumulator", "confusion_matrix", "binary_curves",
           "average_precision", "best_f1"]


class MetricError(ValueError):
    """Metrics cannot be computed from what was accumulated (bad shapes, bad labels, no pixels)."""


def _count_into(acc: paddle.Tensor, index: paddle.Tensor, scatter: Optional[bool] = None) -> paddle.Tensor:
    """Return ``acc`` (1-D int64) plus the occurrence counts of ``index`` (all in range).

    On CPU ``bincount`` is the fast path. On accelerators it is avoided: Paddle's GPU bincount
    copies the input's min/max to the host to size its output (a sync per call); a
    fixed-size scatter-add does not. ``scatter`` forces a path (tests).
    """
    if scatter is None:
        scatter = not index.place.is_cpu_place()
    if not scatter:
        return acc + paddle.bincount(index, minlength=acc.shape[0])
    ones = paddle.ones(index.shape, dtype=acc.dtype)
    return paddle.put_along_axis(acc, index, ones, 0, reduce="add", broadcast=False)


def _squeeze_channel(t: paddle.Tensor, name: str) -> paddle.Tensor:
    if t.ndim == 4 and t.shape[1] == 1:
        return t.squeeze(1)
    if t.ndim != 3:
        raise MetricError(f"{name} must have shape [N, H, W] (or [N, 1, H, W]); got {list(t.shape)}")
    return t


def _mask_like(mask: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
    """``mask`` as [N, H, W], checked against the (squeezed) label's shape."""
    mask = _squeeze_channel(mask, "mask")
    if list(mask.shape) != list(label.shape):
        raise MetricError(f"mask shape {list(mask.shape)} differs from label shape {list(label.shape)}")
    return mask


def _scored_codes(
    pred: paddle.Tensor,
    label: paddle.Tensor,
    num_classes: int,
    ignore_index: Optional[int],
    mask: Optional[paddle.Tensor],
    check_pred: bool = True,
) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    """Flatten and classify pixels without host sync (int32: half the memory of int64).

    Returns (label int32 flat, scored bool flat, code int32 flat) where code is
    label*K + pred for scored pixels, K*K for considered pixels whose label/pred is out of
    range, and K*K+1 for ignored or out-of-mask pixels.
    """
    pred = _squeeze_channel(pred, "pred")
    label = _squeeze_channel(label, "label")
    if list(pred.shape) != list(label.shape):
        raise MetricError(f"pred shape {list(pred.shape)} differs from label shape {list(label.shape)}")
    k = num_classes
    lab = label.reshape([-1]).astype("int32")
    prd = pred.reshape([-1]).astype("int32")
    considered = None if ignore_index is None else lab != ignore_index
    if mask is not None:
        inside = _mask_like(mask, label).reshape([-1]).astype("bool")
        considered = inside if considered is None else considered & inside
    scored = (lab >= 0) & (lab < k)
    if check_pred:
        scored = scored & (prd >= 0) & (prd < k)
    if considered is not None:
        scored = scored & considered
    code = lab * k
    code.add_(prd)
    # masked_fill_ with a python scalar fills on the device: no broadcast copy, no host transfer.
    code.masked_fill_(scored.logical_not(), k * k)
    if considered is not None:
        code.masked_fill_(considered.logical_not(), k * k + 1)
    return lab, scored, code


def confusion_matrix(
    pred: paddle.Tensor,
    label: paddle.Tensor,
    num_classes: int,
    ignore_index: Optional[int] = 255,
    mask: Optional[paddle.Tensor] = None,
) -> paddle.Tensor:
    """KxK int64 confusion matrix ``cm[label, pred]`` on the inputs' device.

    pred, label: [N, H, W] (or [N, 1, H, W]) integer tensors; mask: same shape, nonzero =
    scored. Pixels with label == ignore_index, outside the mask, or with a label/pred outside
    0..K-1 are not counted (SegMetricAccumulator reports the out-of-range ones).
    """
    _, _, code = _scored_codes(pred, label, num_classes, ignore_index, mask)
    k = num_classes
    counts = _count_into(paddle.zeros([k * k + 2], dtype="int64"), code)
    return counts[: k * k].reshape([k, k])


def _divide(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num/den elementwise in float64, ``empty`` where den == 0."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.full(num.shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _hist_auc(neg: np.ndarray, pos: np.ndarray) -> Tuple[float, float]:
    """(AUC, error bound) from per-bucket negative/positive counts (NaN if undefined)."""
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan, math.nan
    pairs2 = 2 * n_pos * n_neg
    # Exact integer arithmetic while it fits int64 (every partial sum is <= 2PN), else float64.
    dtype = np.int64 if pairs2 < 2**63 else np.float64
    neg = neg.astype(dtype)
    pos = pos.astype(dtype)
    neg_below = np.cumsum(neg) - neg
    # A positive beats every negative in lower buckets and ties (1/2) those in its own bucket.
    wins2 = np.dot(pos, 2 * neg_below + neg)
    ties = np.dot(pos, neg)
    if dtype is np.int64:
        return int(wins2) / pairs2, int(ties) / pairs2
    return float(wins2) / pairs2, float(ties) / pairs2


def binary_curves(neg: np.ndarray, pos: np.ndarray) -> Dict[str, np.ndarray]:
    """ROC and precision-recall points of a binary histogram, thresholds descending.

    A point per occupied bucket ``b`` (pixels predicted foreground when their probability is
    >= ``b / bins``), after the point "nothing predicted" (threshold 1, TPR = FPR = 0,
    precision 1 as sklearn). Linking the points by straight lines gives the ROC whose area
    is the histogram AUC (:func:`_hist_auc`: ties in a bucket count 1/2)."""
    neg, pos = np.asarray(neg, np.int64), np.asarray(pos, np.int64)
    bins = len(neg)
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricError("curves need scored pixels of both classes")
    buckets = np.nonzero(neg + pos)[0][::-1]
    tp = np.concatenate([[0], np.cumsum(pos[buckets])])
    fp = np.concatenate([[0], np.cumsum(neg[buckets])])
    precision = np.ones(len(tp))
    precision[1:] = tp[1:] / np.maximum(tp[1:] + fp[1:], 1)
    return {"threshold": np.concatenate([[1.0], buckets / bins]),
            "tp": tp, "fp": fp, "tpr": tp / n_pos, "fpr": fp / n_neg,
            "precision": precision, "recall": tp / n_pos}


def average_precision(neg: np.ndarray, pos: np.ndarray) -> Tuple[float, float]:
    """(AP, error bound): ``sum_k (R_k - R_(k-1)) P_k`` over the histogram's thresholds, as
    sklearn's ``average_precision_score`` over exact scores.

    Scores inside one bucket are one threshold here. Exactly, each positive inside bucket
    ``b`` adds its recall step at a precision between ``(TP+1)/(TP+1+FP+n_b)`` and
    ``(TP+p_b)/(TP+p_b+FP)`` (TP, FP: pixels in higher buckets), so the bound is the sum over
    buckets of ``p_b / P`` times the width of that interval."""
    c = binary_curves(neg, pos)
    tp, fp = c["tp"].astype(np.float64), c["fp"].astype(np.float64)
    p_b, n_b = np.diff(tp), np.diff(fp)
    ap = float(np.sum(np.diff(c["recall"]) * c["precision"][1:]))
    tp_a, fp_a = tp[:-1], fp[:-1]
    p_max = (tp_a + p_b) / np.maximum(tp_a + p_b + fp_a, 1)
    p_min = (tp_a + 1) / (tp_a + 1 + fp_a + n_b)
    bound = float(np.sum(np.where(p_b > 0, p_b / tp[-1] * (p_max - p_min), 0.0)))
    return ap, bound


def best_f1(neg: np.ndarray, pos: np.ndarray) -> Dict[str, float]:
    """The threshold (a bucket's lower edge) where the foreground F1 is highest, and the
    F1, precision, sensitivity and specificity there."""
    c = binary_curves(neg, pos)
    tp, fp = c["tp"][1:], c["fp"][1:]
    fn = c["tp"][-1] - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    k = int(np.argmax(f1)) + 1
    return {"threshold": float(c["threshold"][k]), "f1": float(f1[k - 1]),
            "precision": float(c["precision"][k]), "sensitivity": float(c["tpr"][k]),
            "specificity": float(1.0 - c["fpr"][k])}


class SegMetricAccumulator:
    """Accumulates segmentation metrics over a whole evaluation set on the device.

    Usage: ``update`` per batch, ``all_reduce`` once on every rank after the loop (multi-device
    runs), then ``compute``. ``auc_bins`` buckets of width 1/auc_bins; the AUC error bound is
    reported by ``compute``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: Optional[int] = 255,
        auc_roc: bool = False,
        auc_bins: int = 65536,
        chunk_pixels: int = 2**20,
    ) -> None:
        if int(num_classes) < 2:
            raise MetricError(f"num_classes must be >= 2; got {num_classes}")
        # float32 probabilities carry 24 bits, so finer buckets gain nothing (and int32 indices
        # must hold 2 * bins).
        if auc_roc and not 2 <= int(auc_bins) <= 2**24:
            raise MetricError(f"auc_bins must be in 2..{2**24}; got {auc_bins}")
        if int(chunk_pixels) < 1:
            raise MetricError(f"chunk_pixels must be >= 1; got {chunk_pixels}")
        self.chunk_pixels = int(chunk_pixels)
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.auc_roc = bool(auc_roc)
        self.auc_bins = int(auc_bins)
        self.reset()

    def reset(self) -> None:
        """Zero all counters (tensors are created on the current paddle device)."""
        k = self.num_classes
        # cm flat K*K, then [K*K] = out-of-range labels, [K*K+1] = ignored/out-of-mask pixels.
        self._cm = paddle.zeros([k * k + 2], dtype="int64")
        self._hists: List[paddle.Tensor] = []
        if self.auc_roc:
            n_hist = 1 if k == 2 else k
            # Per histogram: [0, bins) negatives, [bins, 2 bins) positives, [2 bins] unscored.
            self._hists = [paddle.zeros([2 * self.auc_bins + 1], dtype="int64") for _ in range(n_hist)]
        self._reduced = False

    def _bucket_(self, prob: paddle.Tensor) -> paddle.Tensor:
        """Bucket index (int32) of probabilities; scales ``prob`` in place (saves a copy)."""
        prob.scale_(float(self.auc_bins))
        # Truncation == floor for p >= 0; the int clip maps p == 1 (and NaN's cast) into range,
        # so a bad logit can never index outside the histogram.
        return prob.astype("int32").clip_(0, self.auc_bins - 1)

    @paddle.no_grad()
    def update(
        self,
        logits: paddle.Tensor,
        label: paddle.Tensor,
        mask: Optional[paddle.Tensor] = None,
    ) -> None:
        """Add one batch.

        logits: [N, K, H, W] raw scores at label resolution; label: [N, H, W] (or [N, 1, H, W])
        integer; mask: optional [N, H, W] bool/0-1 field of view (0 = not scored).
        """
        if self._reduced:
            raise MetricError("update() after all_reduce(): call reset() before a new evaluation")
        k = self.num_classes
        if logits.ndim != 4 or logits.shape[1] != k:
            raise MetricError(f"logits must have shape [N, {k}, H, W]; got {list(logits.shape)}")
        label = _squeeze_channel(label, "label")
        if list(label.shape) != [logits.shape[0]] + list(logits.shape[2:]):
            raise MetricError(
                f"label shape {list(label.shape)} does not match logits {list(logits.shape)}; "
                "resize logits to the label resolution before scoring"
            )
        if mask is not None:
            mask = _mask_like(mask, label)  # checked here: it is sliced below
        # Pieces of at most chunk_pixels: whole images when they fit, else bands of rows.
        # Per-pixel results do not depend on the piece, so the counts are the same either way.
        n, _, h, w = logits.shape
        per_chunk = self.chunk_pixels // (h * w)
        if per_chunk >= n:
            self._update_piece(logits, label, mask)
            return
        if per_chunk >= 1:
            pieces = [(slice(i, i + per_chunk), slice(0, h)) for i in range(0, n, per_chunk)]
        else:
            rows = max(1, self.chunk_pixels // w)
            pieces = [(slice(i, i + 1), slice(r, r + rows)) for i in range(n) for r in range(0, h, rows)]
        for images, band in pieces:
            self._update_piece(logits[images, :, band], label[images, band],
                               None if mask is None else mask[images, band])

    def _update_piece(self, logits: paddle.Tensor, label: paddle.Tensor,
                      mask: Optional[paddle.Tensor]) -> None:
        k = self.num_classes
        pred = paddle.argmax(logits, axis=1, dtype="int32")
        lab, scored, code = _scored_codes(pred, label, k, self.ignore_index, mask, check_pred=False)
        del pred
        self._cm = _count_into(self._cm, code)
        del code
        if not self.auc_roc:
            return
        if logits.dtype not in (paddle.float32, paddle.float64):
            logits = logits.astype("float32")  # fp16/bf16 under AMP: too coarse for 65536 buckets
        prob = F.softmax(logits, axis=1)
        if k == 2:
            prob = prob[:, 1:].contiguous()  # binary: only the foreground channel is scored
        bins = self.auc_bins
        not_scored = scored.logical_not()
        del scored
        # Binary: one histogram, of the foreground probability. K>2: one per class, one vs
        # rest, built one class at a time; in-place steps keep temporaries at ~3 int32/pixel.
        for h in range(prob.shape[1]):
            idx = self._bucket_(prob[:, h].reshape([-1]))  # each channel is read once
            positive = (lab == (1 if k == 2 else h)).astype("int32")
            positive.scale_(float(bins))
            idx.add_(positive)
            del positive
            idx.masked_fill_(not_scored, 2 * bins)
            self._hists[h] = _count_into(self._hists[h], idx)
            del idx

    def all_reduce(self) -> None:
        """Sum the counters over all ranks (no-op unless a parallel env with >1 rank is up).

        Must be called on every rank, once, after the last ``update``.
        """
        if self._reduced:
            raise MetricError("all_reduce() called twice; counters would be double counted")
        import paddle.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self._cm)
            for h in self._hists:
                dist.all_reduce(h)
        self._reduced = True

    def state(self) -> Dict[str, Any]:
        """Raw counters as numpy (``.tolist()`` them for JSON).

        Keys: num_classes, ignore_index, confusion_matrix [K, K] int64 (rows label, columns
        pred), out_of_range_pixels, unscored_pixels; with auc_roc also auc_bins and auc_hist
        int64 [C, 2, bins] (C = 1 for binary: foreground probability; C = K otherwise, one vs
        rest; [:, 0] negatives, [:, 1] positives, bucket b = [b/bins, (b+1)/bins)).
        """
        k = self.num_classes
        flat = self._cm.numpy()
        out: Dict[str, Any] = {
            "num_classes": k,
            "ignore_index": self.ignore_index,
            "confusion_matrix": flat[: k * k].reshape(k, k).copy(),
            "out_of_range_pixels": int(flat[k * k]),
            "unscored_pixels": int(flat[k * k + 1]),
        }
        if self.auc_roc:
            bins = self.auc_bins
            out["auc_bins"] = bins
            out["auc_hist"] = np.stack([h.numpy()[: 2 * bins].reshape(2, bins) for h in self._hists])
        return out

    def compute(self) -> Dict[str, Any]:
        """Metrics as python floats / lists (see module docstring for conventions).

        Keys: num_pixels, class_iou, miou, class_dice, mdice, acc, class_precision,
        class_recall, kappa; binary: dice_fg, sensitivity, specificity; with auc_roc:
        auc_roc, auc_error_bound, and for K>2 class_auc_roc, class_auc_error_bound.
        """
        st = self.state()
        if st["out_of_range_pixels"]:
            raise MetricError(
                f"{st['out_of_range_pixels']} labelled pixels have values outside 0..{self.num_classes - 1} "
                f"and are not ignore_index ({self.ignore_index}); check num_classes/ignore_index "
                "in the config or the label files"
            )
        cm = st["confusion_matrix"]
        total = int(cm.sum())
        if total == 0:
            raise MetricError("no pixels were scored (empty data set, or everything ignored/masked out)")
        inter = np.diag(cm).astype(np.int64)
        pred_area = cm.sum(axis=0)
        label_area = cm.sum(axis=1)
        iou = _divide(inter, pred_area + label_area - inter, empty=1.0)
        dice = _divide(2 * inter, pred_area + label_area, empty=0.0)
        precision = _divide(inter, pred_area, empty=0.0)
        recall = _divide(inter, label_area, empty=0.0)
        po = inter.sum() / total
        pe = float(np.dot(pred_area.astype(np.float64), label_area.astype(np.float64))) / float(total) ** 2
        kappa = (po - pe) / (1.0 - pe) if pe != 1.0 else math.nan
        res: Dict[str, Any] = {
            "num_pixels": total,
            "class_iou": iou.tolist(),
            "miou": float(iou.mean()),
            "class_dice": dice.tolist(),
            "mdice": float(dice.mean()),
            "acc": float(po),
            "class_precision": precision.tolist(),
            "class_recall": recall.tolist(),
            "kappa": float(kappa),
        }
        if self.num_classes == 2:
            res.update(dice_fg=float(dice[1]), sensitivity=float(recall[1]), specificity=float(recall[0]))
        if self.auc_roc:
            per_class = [_hist_auc(h[0], h[1]) for h in st["auc_hist"]]
            aucs = np.array([a for a, _ in per_class])
            bounds = np.array([b for _, b in per_class])
            defined = ~np.isnan(aucs)
            res["auc_roc"] = float(aucs[defined].mean()) if defined.any() else math.nan
            # |mean of errors| <= mean of |errors|.
            res["auc_error_bound"] = float(bounds[defined].mean()) if defined.any() else math.nan
            if self.num_classes > 2:
                res["class_auc_roc"] = aucs.tolist()
                res["class_auc_error_bound"] = bounds.tolist()
            elif defined.all():
                neg, pos = st["auc_hist"][0]
                res["average_precision"], res["ap_error_bound"] = average_precision(neg, pos)
                res["best_f1"] = best_f1(neg, pos)
        return res
