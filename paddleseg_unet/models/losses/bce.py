"""Binary cross-entropy on logits, averaged over the non-ignored label entries.

With one output channel (N x 1 x H x W) the label must be 0/1 (or ignore). With C > 1
channels each channel is an independent binary problem against the one-hot label, as
PaddleSeg does for multi-channel BCE.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import paddle
import paddle.nn.functional as F

from paddleseg_unet.cvlibs.registry import LOSSES
from paddleseg_unet.models.losses.cross_entropy import (EPS, LossInputError,
                                                        class_weight_tensor, prepare_label)


@LOSSES.register()
class BCELoss(paddle.nn.Layer):
    """Sigmoid BCE; ``pos_weight`` (a number, or one per channel) scales the positive term:
    l = -(pos_weight * y * log(s(x)) + (1 - y) * log(1 - s(x)))."""

    def __init__(self, ignore_index: int = 255,
                 pos_weight: Optional[Union[float, Sequence[float]]] = None) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        if isinstance(pos_weight, (int, float)) and not isinstance(pos_weight, bool):
            pos_weight = [pos_weight]
        elif pos_weight is not None and not isinstance(pos_weight, (list, tuple)):
            raise ValueError(f"BCELoss: pos_weight must be a number or a list of numbers "
                             f"(one per channel), got {pos_weight!r}")
        self.pos_weight = class_weight_tensor(pos_weight, "BCELoss (pos_weight)")

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        channels = logits.shape[1]
        if self.pos_weight is not None and self.pos_weight.shape[0] not in (1, channels):
            raise LossInputError(f"BCELoss: pos_weight has {self.pos_weight.shape[0]} values "
                                 f"for {channels} output channels; give 1 or {channels}")
        clean, mask = prepare_label(logits, label, self.ignore_index, max(channels, 2),
                                    "BCELoss")
        mask = mask.unsqueeze(1)
        if channels == 1:
            target = clean.unsqueeze(1).astype(logits.dtype)
        else:
            target = F.one_hot(clean, channels).transpose([0, 3, 1, 2]).astype(logits.dtype)
        # -log(s(x)) = softplus(-x) and -log(1 - s(x)) = softplus(x), both stable.
        positive = target * F.softplus(-logits)
        if self.pos_weight is not None:
            positive = positive * self.pos_weight.reshape([1, -1, 1, 1])
        loss = positive + (1.0 - target) * F.softplus(logits)
        return (loss * mask).sum() / paddle.clip(mask.sum() * channels, min=EPS)
