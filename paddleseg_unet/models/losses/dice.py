"""Soft Dice loss over all classes (background included), as the compat contract states.

For softmax probabilities p and one-hot labels y, both zeroed on ignored pixels:
loss[n, k] = 1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth), sums over H, W of
sample n; the result is the mean over samples, then over classes (= the mean of the N x K
table). The label tensor is only read.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddleseg_unet.cvlibs.errors import ComponentArgumentError
from paddleseg_unet.cvlibs.registry import LOSSES
from paddleseg_unet.models.losses.cross_entropy import prepare_label


@LOSSES.register()
class DiceLoss(paddle.nn.Layer):
    """Per-sample, per-class soft Dice loss with Laplace ``smooth`` and ignored pixels."""

    def __init__(self, smooth: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or smooth < 0:
            raise ComponentArgumentError(f"DiceLoss: smooth must be a non-negative number, "
                                         f"got {smooth!r}", "smooth")
        self.smooth = float(smooth)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        num_classes = logits.shape[1]
        clean, mask = prepare_label(logits, label, self.ignore_index, num_classes, "DiceLoss")
        mask = mask.unsqueeze(1)
        prob = F.softmax(logits, axis=1) * mask
        onehot = F.one_hot(clean, num_classes).transpose([0, 3, 1, 2]) * mask
        intersection = (prob * onehot).sum(axis=[2, 3])
        cardinality = prob.sum(axis=[2, 3]) + onehot.sum(axis=[2, 3])
        dice = (2.0 * intersection + self.smooth) / (cardinality + self.smooth)
        return (1.0 - dice).mean()
