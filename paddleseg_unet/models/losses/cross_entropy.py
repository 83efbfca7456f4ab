"""Softmax cross-entropy over the non-ignored pixels, plus the label checks every loss shares.

PaddleSeg's weighted form is a weighted MEAN: sum_i w[y_i] * ce_i / sum_i w[y_i] over the
non-ignored pixels i (it divides by the mean of mask * class-weight), so a uniform weight
vector gives exactly the unweighted loss. That is what is implemented here.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import paddle
import paddle.nn.functional as F

from paddleseg_unet.cvlibs.registry import LOSSES

# Guards the division when every pixel of a batch is ignored: the loss is then 0, not NaN.
EPS = 1e-8


class LossInputError(ValueError):
    """Logits and label that a loss cannot use (shape, class range); says what to fix."""


def prepare_label(logits: paddle.Tensor, label: paddle.Tensor, ignore_index: int,
                  num_classes: Optional[int], loss_name: str
                  ) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Check ``label`` against ``logits`` (N, C, H, W) and return ``(clean, mask)``.

    ``label`` may be N x H x W or N x 1 x H x W, of any integer type. ``clean`` is a NEW
    int64 N x H x W tensor with ignored pixels replaced by 0 (the caller's tensor is never
    written to); ``mask`` is float32 N x H x W, 1 where the pixel counts. Labels outside
    [0, num_classes) that are not ``ignore_index`` raise LossInputError (skip the range
    check with ``num_classes=None``).
    """
    if logits.ndim != 4:
        raise LossInputError(f"{loss_name}: logits must be N x C x H x W, got shape "
                             f"{list(logits.shape)}")
    if label.ndim == 4 and label.shape[1] == 1:
        label = label.squeeze(1)
    n, _, h, w = logits.shape
    if label.ndim != 3 or list(label.shape) != [n, h, w]:
        raise LossInputError(
            f"{loss_name}: label shape {list(label.shape)} does not match logits "
            f"{list(logits.shape)}; the label must be N x H x W ({[n, h, w]}) at the "
            f"logit resolution")
    if label.dtype != paddle.int64:
        label = label.astype("int64")
    valid = label != ignore_index
    clean = paddle.where(valid, label, paddle.zeros_like(label))
    if num_classes is not None:
        bad = paddle.logical_or(clean < 0, clean >= num_classes)
        if bool(bad.any()):
            found = sorted(set(label.masked_select(bad).numpy().tolist()))[:5]
            raise LossInputError(
                f"{loss_name}: label values {found} are outside 0..{num_classes - 1} and are "
                f"not ignore_index {ignore_index}. Check num_classes of the model, and that "
                f"the dataset maps its labels to class indices (e.g. 0/255 vessel masks "
                f"must become 0/1)")
    clean.stop_gradient = True
    mask = valid.astype("float32")
    mask.stop_gradient = True
    return clean, mask


def class_weight_tensor(weight: Optional[Sequence[float]], loss_name: str
                        ) -> Optional[paddle.Tensor]:
    """Validate a per-class weight list and return it as a float32 tensor (or None)."""
    if weight is None:
        return None
    if isinstance(weight, (int, float)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in weight):
        raise ValueError(f"{loss_name}: weight must be a list of numbers, one per class, "
                         f"got {weight!r}")
    if len(weight) == 0 or any(v < 0 for v in weight):
        raise ValueError(f"{loss_name}: weight must be a non-empty list of non-negative "
                         f"numbers, got {list(weight)}")
    return paddle.to_tensor([float(v) for v in weight], dtype="float32")


@LOSSES.register()
class CrossEntropyLoss(paddle.nn.Layer):
    """Softmax cross-entropy, averaged over non-ignored pixels.

    Args:
        weight: optional per-class weights (length = number of classes); the result is
            then the weighted mean sum(w[y] * ce) / sum(w[y]) over non-ignored pixels.
        ignore_index: label value excluded from the loss.
    """

    def __init__(self, weight: Optional[Sequence[float]] = None,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.weight = class_weight_tensor(weight, "CrossEntropyLoss")

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        num_classes = logits.shape[1]
        if self.weight is not None and self.weight.shape[0] != num_classes:
            raise LossInputError(
                f"CrossEntropyLoss: weight has {self.weight.shape[0]} values but the logits "
                f"have {num_classes} classes; give one weight per class")
        clean, mask = prepare_label(logits, label, self.ignore_index, num_classes,
                                    "CrossEntropyLoss")
        # Fused log-softmax + NLL; ignored pixels carry label 0 here and are masked below.
        nll = F.cross_entropy(logits, clean.unsqueeze(1), reduction="none", axis=1).squeeze(1)
        if self.weight is None:
            pixel_weight = mask
        else:
            pixel_weight = paddle.gather(self.weight, clean.flatten()).reshape(clean.shape) * mask
        return (nll * pixel_weight).sum() / paddle.clip(pixel_weight.sum(), min=EPS)
