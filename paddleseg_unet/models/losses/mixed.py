"""Weighted sums of losses: ``MixedLoss`` for one output, ``build_loss`` for a config.

A config's ``loss: {types: [...], coef: [...]}`` is paired with the model's output list BY
INDEX, as PaddleSeg does: logits[i] gets types[i] weighted by coef[i], and the terms are
summed. UNet returns one logit map, so it needs exactly one type; to apply several losses to
that one output, use a single ``MixedLoss`` type. A count mismatch is an error, never a
silent truncation.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Sequence, Union

import paddle

from paddleseg_unet.cvlibs.errors import ConfigError
from paddleseg_unet.cvlibs.registry import LOSSES, build
from paddleseg_unet.models.losses.cross_entropy import LossInputError


def _check_coef(coef: Any, count: int, what: str) -> List[float]:
    if not isinstance(coef, (list, tuple)) or not all(
            isinstance(c, numbers.Real) and not isinstance(c, bool) for c in coef):
        raise ValueError(f"{what}: coef must be a list of numbers, got {coef!r}")
    if len(coef) != count:
        raise ValueError(f"{what}: coef has {len(coef)} values for {count} losses; give one "
                         f"coefficient per loss")
    return [float(c) for c in coef]


@LOSSES.register()
class MixedLoss(paddle.nn.Layer):
    """sum_i coef[i] * losses[i](logits, label) on ONE logit map."""

    def __init__(self, losses: Sequence[Callable], coef: Sequence[float]) -> None:
        super().__init__()
        if not isinstance(losses, (list, tuple)) or not losses:
            raise ValueError(f"MixedLoss: losses must be a non-empty list of losses, "
                             f"got {losses!r}")
        for i, loss in enumerate(losses):
            if not callable(loss):
                raise ValueError(f"MixedLoss: losses[{i}] is not a loss (got {loss!r}); each "
                                 f"entry needs a 'type' naming a registered loss")
        self.coef = _check_coef(coef, len(losses), "MixedLoss")
        self.losses = paddle.nn.LayerList(losses) if all(
            isinstance(l, paddle.nn.Layer) for l in losses) else list(losses)

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        total = None
        for c, loss in zip(self.coef, self.losses):
            term = c * loss(logits, label)
            total = term if total is None else total + term
        return total


class LossComputation:
    """The callable ``build_loss`` returns: ``(logits_list, label) -> scalar loss``."""

    def __init__(self, losses: Sequence[Callable], coef: Sequence[float], where: str = "loss"):
        self.losses = list(losses)
        self.coef = [float(c) for c in coef]
        self.where = where

    def terms(self, logits_list: Union[paddle.Tensor, Sequence[paddle.Tensor]],
              label: paddle.Tensor) -> List[paddle.Tensor]:
        """The weighted term of each output, coef[i] * types[i](logits_list[i], label)."""
        if isinstance(logits_list, paddle.Tensor):
            logits_list = [logits_list]
        if len(logits_list) != len(self.losses):
            raise LossInputError(
                f"{self.where}: the model returned {len(logits_list)} logit map(s) but "
                f"loss.types has {len(self.losses)} entries. Losses pair with outputs by "
                f"index (types[i] -> output i), so give one type per output (UNet: 1); to "
                f"combine several losses on one output, use one MixedLoss type")
        # Losses sum over whole images: under AMP (fp16/bf16) those sums lose precision or
        # overflow, so they are always computed in float32, outside autocast.
        with paddle.amp.auto_cast(enable=False):
            return [c * loss(logits.astype("float32") if logits.dtype != paddle.float32
                             else logits, label)
                    for c, loss, logits in zip(self.coef, self.losses, logits_list)]

    def __call__(self, logits_list: Union[paddle.Tensor, Sequence[paddle.Tensor]],
                 label: paddle.Tensor) -> paddle.Tensor:
        return paddle.add_n(self.terms(logits_list, label))

    def __repr__(self) -> str:
        names = ", ".join(type(l).__name__ for l in self.losses)
        return f"LossComputation(types=[{names}], coef={self.coef})"


def build_loss(loss_cfg: Dict[str, Any], where: str = "loss") -> LossComputation:
    """Build ``{types: [{type: ...}, ...], coef: [...]}`` into one loss callable.

    ``where`` names the config file and key (``"drive.yml: loss"``) for error messages;
    every problem raises ConfigError naming it.
    """
    if not isinstance(loss_cfg, dict):
        raise ConfigError(f"{where}: must be a mapping with 'types' and 'coef', "
                          f"got {loss_cfg!r}")
    unknown = sorted(set(loss_cfg) - {"types", "coef"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a loss section holds only "
                          f"'types' and 'coef'")
    types = loss_cfg.get("types")
    if not isinstance(types, list) or not types:
        raise ConfigError(f"{where}.types: must be a non-empty list such as "
                          f"[{{type: CrossEntropyLoss}}], got {types!r}")
    try:
        coef = _check_coef(loss_cfg.get("coef"), len(types), f"{where}.coef")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    losses = [build(spec, LOSSES, f"{where}.types[{i}]") for i, spec in enumerate(types)]
    return LossComputation(losses, coef, where)
