"""Optimizers and learning-rate schedules, built from the config's sections.

Learning rate at training step t (t = 0 is the first ``optimizer.step()``; the trainer calls
``lr_scheduler.step()`` after each ``optimizer.step()``), with W = warmup iterations:

- t < W: linear warmup ``start + (learning_rate - start) * t / W``;
- PolynomialDecay, s = min(t - W, T): ``(learning_rate - end_lr) * (1 - s/T)^power + end_lr``;
- CosineDecay, s = min(t - W, T): ``eta_min + (learning_rate - eta_min) * (1 + cos(pi s/T)) / 2``.

When the config gives no ``decay_steps`` / ``T_max``, ``build_lr_scheduler`` uses
``iters - W`` (PaddleSeg: the decay restarts after warmup and ends at the last iteration).
Every schedule is a ``paddle.optimizer.lr.LRScheduler`` computed in closed form from
``last_epoch``, so ``state_dict()`` / ``set_state_dict()`` resume it exactly.

Optimizers: ``weight_decay`` is coupled L2 (added to the gradient, as PaddleSeg does) for
SGD, Momentum and Adam, and decoupled for AdamW.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Dict, Iterable, Optional, Union

import paddle
from paddle.optimizer.lr import LRScheduler

from paddleseg_unet.cvlibs.errors import ComponentArgumentError, ConfigError
from paddleseg_unet.cvlibs.registry import GRAD_CLIPS, LR_SCHEDULERS, OPTIMIZERS, build

# PaddleSeg's grad_clip_cfg names Paddle's clip classes; a new clip is one registration.
for _clip in ("ClipGradByGlobalNorm", "ClipGradByNorm", "ClipGradByValue"):
    GRAD_CLIPS.register(_clip)(getattr(paddle.nn, _clip))


def _number(owner: str, name: str, value: Any, minimum: float = 0.0, integer: bool = False,
            strict: bool = False) -> Union[int, float]:
    """``value`` as a finite number >= minimum (> minimum if ``strict``), else a
    ValueError. NaN and Inf are refused: NaN passes every comparison test unnoticed."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or (
            value <= minimum if strict else value < minimum):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise ComponentArgumentError(f"{owner}: {name} must be "
                                     f"{'an integer' if integer else 'a number'} {bound}, "
                                     f"got {value!r}", name)
    return int(value) if integer else float(value)


# ----------------------------------------------------------------------------- schedules

class _WarmupSchedule(LRScheduler):
    """Base of the closed-form schedules: linear warmup, then ``_decayed(t - warmup)``."""

    steps_arg = ""  # the argument build_lr_scheduler fills with the training length

    def __init__(self, learning_rate: float, warmup_iters: int = 0,
                 warmup_start_lr: float = 0.0) -> None:
        name = type(self).__name__
        learning_rate = _number(name, "learning_rate", learning_rate, strict=True)
        self.warmup_iters = _number(name, "warmup_iters", warmup_iters, integer=True)
        self.warmup_start_lr = _number(name, "warmup_start_lr", warmup_start_lr)
        super().__init__(learning_rate)

    def _steps(self, value: Optional[int]) -> int:
        if value is None:
            raise ValueError(f"{type(self).__name__}: {self.steps_arg} is required (when "
                             f"built from a config it defaults to iters - warmup_iters)")
        return _number(type(self).__name__, self.steps_arg, value, integer=True, strict=True)

    def _decayed(self, step: int) -> float:
        raise NotImplementedError

    def get_lr(self) -> float:
        t = self.last_epoch
        if t < self.warmup_iters:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * (
                t / self.warmup_iters)
        return self._decayed(t - self.warmup_iters)


@LR_SCHEDULERS.register()
class PolynomialDecay(_WarmupSchedule):
    """(learning_rate - end_lr) * (1 - s/decay_steps)^power + end_lr, s clamped to
    decay_steps, after an optional linear warmup."""

    steps_arg = "decay_steps"

    def __init__(self, learning_rate: float, decay_steps: Optional[int] = None,
                 end_lr: float = 0.0, power: float = 0.9, warmup_iters: int = 0,
                 warmup_start_lr: float = 0.0) -> None:
        self.decay_steps = self._steps(decay_steps)
        self.end_lr = _number("PolynomialDecay", "end_lr", end_lr)
        self.power = _number("PolynomialDecay", "power", power, strict=True)
        super().__init__(learning_rate, warmup_iters, warmup_start_lr)

    def _decayed(self, step: int) -> float:
        step = min(step, self.decay_steps)
        return ((self.base_lr - self.end_lr) * (1.0 - step / self.decay_steps) ** self.power
                + self.end_lr)


@LR_SCHEDULERS.register("CosineAnnealingDecay")
@LR_SCHEDULERS.register()
class CosineDecay(_WarmupSchedule):
    """eta_min + (learning_rate - eta_min) * (1 + cos(pi * s / T_max)) / 2, s clamped to
    T_max (one half-cosine, no restarts), after an optional linear warmup. Also registered
    as ``CosineAnnealingDecay``, which it equals for t <= T_max."""

    steps_arg = "T_max"

    def __init__(self, learning_rate: float, T_max: Optional[int] = None,  # noqa: N803
                 eta_min: float = 0.0, warmup_iters: int = 0,
                 warmup_start_lr: float = 0.0) -> None:
        self.T_max = self._steps(T_max)
        self.eta_min = _number("CosineDecay", "eta_min", eta_min)
        super().__init__(learning_rate, warmup_iters, warmup_start_lr)

    def _decayed(self, step: int) -> float:
        step = min(step, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * 0.5 * (
            1.0 + math.cos(math.pi * step / self.T_max))


@LR_SCHEDULERS.register()
class LinearWarmup(LRScheduler):
    """Linear ramp from ``start_lr`` to ``end_lr`` over ``warmup_steps``, then
    ``learning_rate`` (a number, or a schedule run from its own step 0). ``end_lr``
    defaults to the peak of ``learning_rate`` so the ramp meets the schedule."""

    def __init__(self, learning_rate: Union[float, LRScheduler], warmup_steps: int,
                 start_lr: float = 0.0, end_lr: Optional[float] = None) -> None:
        if isinstance(learning_rate, LRScheduler):
            peak = learning_rate.base_lr
        else:
            peak = _number("LinearWarmup", "learning_rate", learning_rate, strict=True)
        self.learning_rate = learning_rate
        self.warmup_steps = _number("LinearWarmup", "warmup_steps", warmup_steps, integer=True)
        self.start_lr = _number("LinearWarmup", "start_lr", start_lr)
        self.end_lr = peak if end_lr is None else _number("LinearWarmup", "end_lr", end_lr)
        super().__init__(self.start_lr if self.warmup_steps else self.end_lr)

    def get_lr(self) -> float:
        t = self.last_epoch
        if t < self.warmup_steps:
            return self.start_lr + (self.end_lr - self.start_lr) * t / self.warmup_steps
        if isinstance(self.learning_rate, LRScheduler):
            self.learning_rate.step(t - self.warmup_steps)
            return self.learning_rate.last_lr
        return float(self.learning_rate)

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        if isinstance(self.learning_rate, LRScheduler):
            state["inner"] = self.learning_rate.state_dict()
        return state

    def set_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state = dict(state_dict)
        inner = state.pop("inner", None)
        super().set_state_dict(state)
        if isinstance(self.learning_rate, LRScheduler) and inner is not None:
            self.learning_rate.set_state_dict(inner)


def build_lr_scheduler(cfg: Dict[str, Any], iters: int, where: str = "lr_scheduler"
                       ) -> LRScheduler:
    """Build the ``lr_scheduler`` section for a run of ``iters`` iterations.

    A missing ``decay_steps`` / ``T_max`` becomes ``iters - warmup_iters``; a
    ``LinearWarmup`` whose ``learning_rate`` is itself a schedule gets that schedule built
    for ``iters - warmup_steps``. Problems raise ConfigError naming ``where``.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("type"), str):
        raise ConfigError(f"{where}: must be a mapping with a 'type', e.g. "
                          f"{{type: PolynomialDecay, learning_rate: 0.01}}, got {cfg!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters <= 0:
        raise ConfigError(f"{where}: iters must be a positive integer, got {iters!r}")
    cfg = dict(cfg)
    scheduler_cls = LR_SCHEDULERS.get(cfg["type"], where)
    extra: Dict[str, Any] = {}
    if isinstance(cfg.get("learning_rate"), dict):
        warmup = _int_or_zero(cfg.get("warmup_steps"))
        extra["learning_rate"] = build_lr_scheduler(
            cfg.pop("learning_rate"), max(iters - warmup, 1), f"{where}.learning_rate")
    steps_arg = getattr(scheduler_cls, "steps_arg", "")
    if steps_arg and cfg.get(steps_arg) is None:
        cfg[steps_arg] = max(iters - _int_or_zero(cfg.get("warmup_iters")), 1)
    return build(cfg, LR_SCHEDULERS, where, **extra)


def _int_or_zero(value: Any) -> int:
    # Only for sizing defaults; the constructor reports a bad value itself.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# ----------------------------------------------------------------------------- optimizers

def _l2(owner: str, weight_decay: Optional[float]) -> Optional[paddle.regularizer.L2Decay]:
    if weight_decay is None:
        return None
    return paddle.regularizer.L2Decay(_number(owner, "weight_decay", weight_decay))


def _grad_clip(owner: str, grad_clip: Optional[float], grad_clip_cfg: Optional[Dict[str, Any]]
               ) -> Optional[Any]:
    """``grad_clip: <max global norm>`` or PaddleSeg's ``grad_clip_cfg: {name: ..., ...}``."""
    if grad_clip is not None and grad_clip_cfg is not None:
        raise ValueError(f"{owner}: give grad_clip or grad_clip_cfg, not both")
    if grad_clip is not None:
        norm = _number(owner, "grad_clip", grad_clip, strict=True)
        return paddle.nn.ClipGradByGlobalNorm(clip_norm=norm)
    if grad_clip_cfg is None:
        return None
    if not isinstance(grad_clip_cfg, dict) or grad_clip_cfg.get("name") not in GRAD_CLIPS:
        raise ValueError(f"{owner}: grad_clip_cfg must be a mapping whose 'name' is one of "
                         f"{', '.join(GRAD_CLIPS.names())}, got {grad_clip_cfg!r}")
    args = {k: v for k, v in grad_clip_cfg.items() if k != "name"}
    try:
        return GRAD_CLIPS.get(grad_clip_cfg["name"])(**args)
    except TypeError as exc:
        raise ValueError(f"{owner}: grad_clip_cfg {grad_clip_cfg!r}: {exc}") from None


LearningRate = Union[float, LRScheduler]


@OPTIMIZERS.register("SGD")
def build_sgd(parameters: Iterable, learning_rate: LearningRate, momentum: float = 0.0,
              use_nesterov: bool = False, weight_decay: Optional[float] = None,
              grad_clip: Optional[float] = None,
              grad_clip_cfg: Optional[Dict[str, Any]] = None) -> paddle.optimizer.Optimizer:
    """SGD; with ``momentum > 0`` it is Paddle's Momentum (the PaddleSeg configs' meaning):
    v = mu*v + (g + wd*w); w -= lr*v (Nesterov if asked)."""
    momentum = _number("SGD", "momentum", momentum)
    if momentum > 0:
        return paddle.optimizer.Momentum(
            learning_rate=learning_rate, momentum=momentum, parameters=parameters,
            use_nesterov=bool(use_nesterov), weight_decay=_l2("SGD", weight_decay),
            grad_clip=_grad_clip("SGD", grad_clip, grad_clip_cfg))
    if use_nesterov:
        raise ValueError("SGD: use_nesterov needs momentum > 0")
    return paddle.optimizer.SGD(
        learning_rate=learning_rate, parameters=parameters,
        weight_decay=_l2("SGD", weight_decay),
        grad_clip=_grad_clip("SGD", grad_clip, grad_clip_cfg))


# ``Momentum`` and old PaddleSeg's ``type: sgd`` (which always built a Momentum optimizer)
# are SGD with momentum 0.9 unless the config says otherwise.
build_momentum = functools.partial(build_sgd, momentum=0.9)
OPTIMIZERS.register("Momentum")(build_momentum)
OPTIMIZERS.register("sgd")(build_momentum)


@OPTIMIZERS.register("adam")
@OPTIMIZERS.register("Adam")
def build_adam(parameters: Iterable, learning_rate: LearningRate, beta1: float = 0.9,
               beta2: float = 0.999, epsilon: float = 1e-8,
               weight_decay: Optional[float] = None, grad_clip: Optional[float] = None,
               grad_clip_cfg: Optional[Dict[str, Any]] = None) -> paddle.optimizer.Optimizer:
    """Adam with coupled L2 ``weight_decay`` (added to the gradient before the moments)."""
    return paddle.optimizer.Adam(
        learning_rate=learning_rate, beta1=_number("Adam", "beta1", beta1),
        beta2=_number("Adam", "beta2", beta2),
        epsilon=_number("Adam", "epsilon", epsilon, strict=True), parameters=parameters,
        weight_decay=_l2("Adam", weight_decay),
        grad_clip=_grad_clip("Adam", grad_clip, grad_clip_cfg))


@OPTIMIZERS.register("AdamW")
def build_adamw(parameters: Iterable, learning_rate: LearningRate, beta1: float = 0.9,
                beta2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = 0.01,
                grad_clip: Optional[float] = None,
                grad_clip_cfg: Optional[Dict[str, Any]] = None) -> paddle.optimizer.Optimizer:
    """AdamW: decoupled decay w -= lr * weight_decay * w, then the Adam step."""
    return paddle.optimizer.AdamW(
        learning_rate=learning_rate, beta1=_number("AdamW", "beta1", beta1),
        beta2=_number("AdamW", "beta2", beta2),
        epsilon=_number("AdamW", "epsilon", epsilon, strict=True), parameters=parameters,
        weight_decay=_number("AdamW", "weight_decay", weight_decay),
        grad_clip=_grad_clip("AdamW", grad_clip, grad_clip_cfg))


def build_optimizer(cfg: Dict[str, Any], parameters: Iterable,
                    lr_scheduler: LearningRate, where: str = "optimizer"
                    ) -> paddle.optimizer.Optimizer:
    """Build the ``optimizer`` section over ``parameters`` driven by ``lr_scheduler``.

    The learning rate lives in ``lr_scheduler``, never in this section; problems raise
    ConfigError naming ``where``.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("type"), str):
        raise ConfigError(f"{where}: must be a mapping with a 'type', e.g. "
                          f"{{type: SGD, momentum: 0.9, weight_decay: 4.0e-5}}, got {cfg!r}")
    for key in ("learning_rate", "parameters"):
        if key in cfg:
            hint = (" Set it in lr_scheduler.learning_rate (or --learning_rate)."
                    if key == "learning_rate" else "")
            raise ConfigError(f"{where}.{key}: not allowed in the optimizer section.{hint}")
    return build(cfg, OPTIMIZERS, where, parameters=parameters, learning_rate=lr_scheduler)
