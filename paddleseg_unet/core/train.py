"""The iteration-based training loop.

``Trainer`` owns the loop and the step (forward, loss, backward, optimizer and lr step);
everything else (logging and its writers, EMA, evaluation, best model, early stop,
checkpoints, a progress bar) is a hook of :mod:`paddleseg_unet.core.hooks`, called before
and after the run and every step, as detectron2's ``TrainerBase``/``HookBase``. Exact resume:
the model, optimizer (with its lr scheduler), RNG states, EMA, best metric, early-stop count,
every hook's own state and the loader position are all restored, and the loader's per-sample randomness depends
only on (seed, draw index), so an interrupted run continues with the same batches and the
same augmentations (on CPU bit for bit; see docs/training.md).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import paddle

from paddleseg_unet.core.checkpoint import TrainState, list_checkpoints, load_checkpoint
from paddleseg_unet.core.evaluate import EvalOptions, evaluate
from paddleseg_unet.core.hooks import (HookBase, Writer, build_writers, default_hooks,
                                       hook_name)
from paddleseg_unet.datasets.loader import build_dataloader
from paddleseg_unet.utils import onednn
from paddleseg_unet.utils.logger import logger

PRECISIONS = ("fp32", "fp16", "bf16")
# Paddle's BatchNorm warns on every training forward; the statement is informational.
warnings.filterwarnings("ignore", message="When training, we now always track global mean")
AMP_LEVELS = ("O1", "O2")


class TrainError(Exception):
    """Bad training options, named with the flag to fix."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or Inf: the run cannot train any further."""


def check_finite_loss(loss_value: float, iteration: int, save_dir: Optional[str] = None
                      ) -> None:
    """Raise :class:`NonFiniteLossError` naming ``iteration``, the likely causes and the
    newest checkpoint of ``save_dir`` if ``loss_value`` (the unscaled loss as a Python
    float) is NaN or Inf.

    With AMP, a step the GradScaler skips because the *gradients* of the scaled loss
    overflowed is normal (it lowers the scale and retries) and is not seen here: only the
    loss value itself counts."""
    if math.isfinite(loss_value):
        return
    checkpoints = list_checkpoints(save_dir) if save_dir else []
    kept = (f"the last good checkpoint is {checkpoints[-1]} (after fixing the cause, "
            f"--resume_model it or start again)" if checkpoints
            else "no checkpoint had been saved yet")
    raise NonFiniteLossError(
        f"Training stopped at iteration {iteration}: the loss is {loss_value}. Likely causes: "
        f"a learning rate too high for this model and batch (lr_scheduler.learning_rate, "
        f"--learning_rate), loss weights (loss.coef) or a loss dividing by zero, or bad data "
        f"(NaN/Inf pixels, label values other than the classes and ignore_index). Nothing "
        f"was saved for this iteration; {kept}")


@dataclass
class TrainOptions:
    """The flags of ``tools/train.py`` (same names); ``check()`` validates them."""
    iters: int
    batch_size: int
    save_dir: str = "output"
    save_interval: int = 1000
    eval_interval: Optional[int] = None  # default: save_interval
    log_iters: int = 10
    keep_checkpoint_max: int = 5
    resume_model: Optional[str] = None
    num_workers: int = 0
    seed: int = 0
    do_eval: bool = False
    use_vdl: bool = False
    precision: str = "fp32"
    amp_level: str = "O1"
    early_stop_intervals: Optional[int] = None
    ema_decay: Optional[float] = None
    ema_warmup: bool = False  # PaddleSeg's --use_ema: decay min(1 - 1/(iter + 1), ema_decay)
    best_metric: str = "mIoU"
    eval_options: Optional[EvalOptions] = None  # default: plain, with num_workers
    # PaddleSeg's flag: forward + loss as one static graph (paddle.jit.to_static). On a CPU
    # it is slower than eager, whose convolutions run on oneDNN (docs/training.md); kept
    # for parity.
    to_static_training: bool = False

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrainError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.amp_level not in AMP_LEVELS:
            raise TrainError(f"--amp_level must be O1 or O2, got {self.amp_level!r}")
        for name in ("iters", "batch_size", "save_interval", "log_iters", "eval_interval"):
            if getattr(self, name) is not None and int(getattr(self, name)) <= 0:
                raise TrainError(f"--{name} must be a positive integer, "
                                 f"got {getattr(self, name)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise TrainError(f"--ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.early_stop_intervals is not None and int(self.early_stop_intervals) <= 0:
            raise TrainError(f"--early_stop_intervals must be a positive integer, "
                             f"got {self.early_stop_intervals}")


class EMA:
    """Exponential moving average of the weights (float parameters and BN statistics):
    after every step ``shadow = decay * shadow + (1 - decay) * weight``. Swapped in for
    evaluation and ``best_model``; saved in checkpoints so a resumed run continues it."""

    def __init__(self, model: paddle.nn.Layer, decay: float) -> None:
        self.decay = float(decay)
        # state_dict() hands out the live tensors: keep them to avoid a lookup per step.
        # A layer registered under two names (UNet's cls/conv) is averaged (and swapped)
        # once; ``aliases`` maps its second name to the first.
        self.live: Dict[str, paddle.Tensor] = {}
        self.aliases: Dict[str, str] = {}
        first: Dict[int, str] = {}
        for key, value in model.state_dict().items():
            if value.dtype not in (paddle.float32, paddle.float64):
                continue
            if id(value) in first:
                self.aliases[key] = first[id(value)]
            else:
                first[id(value)] = key
                self.live[key] = value
        self.shadow = {k: v.detach().clone() for k, v in self.live.items()}

    @paddle.no_grad()
    def update(self, decay: Optional[float] = None) -> None:
        """One step of the average, with ``decay`` (default: the EMA's own)."""
        decay = self.decay if decay is None else float(decay)
        for key, shadow in self.shadow.items():
            shadow.set_value(decay * shadow + (1.0 - decay) * self.live[key])

    @paddle.no_grad()
    def swap(self) -> None:
        """Exchange the model's weights with the averaged ones (call twice to undo)."""
        for key, shadow in self.shadow.items():
            current = self.live[key].clone()
            self.live[key].set_value(shadow)
            shadow.set_value(current)

    def state_dict(self) -> Dict[str, paddle.Tensor]:
        """The averaged weights under every name the model's state dict uses."""
        state = dict(self.shadow)
        state.update({alias: self.shadow[key] for alias, key in self.aliases.items()})
        return state

    def set_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise TrainError(f"The checkpoint's EMA weights lack {len(missing)} keys "
                             f"(e.g. {missing[:3]}); was it written with another model?")
        for key, shadow in self.shadow.items():
            shadow.set_value(paddle.to_tensor(state[key], dtype=shadow.dtype))


class Trainer:
    """Train ``model`` on ``train_dataset`` for ``options.iters`` iterations.

    ``hooks`` are added to the built-in ones (:func:`~paddleseg_unet.core.hooks.default_hooks`)
    and ``writers`` to the text log (and VisualDL with ``use_vdl``)."""

    def __init__(self, model: paddle.nn.Layer, train_dataset: Any, loss_fn: Callable,
                 optimizer: Any, lr_scheduler: Any, options: TrainOptions,
                 val_dataset: Any = None, num_classes: Optional[int] = None,
                 config: Optional[Dict[str, Any]] = None,
                 evaluate_fn: Optional[Callable[..., Dict[str, Any]]] = None,
                 hooks: Sequence[HookBase] = (), writers: Sequence[Writer] = ()) -> None:
        options.check()
        if options.eval_options is None:
            options.eval_options = EvalOptions(num_workers=options.num_workers)
        if options.do_eval and val_dataset is None:
            raise TrainError("--do_eval needs a val_dataset section in the config")
        self.options = options
        self.model = model
        self.train_model = model  # the DataParallel wrapper on several devices
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.num_classes = num_classes
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.config = config
        self.evaluate_fn = evaluate_fn or evaluate
        self.state = TrainState(metric_name=options.best_metric)
        self.world_size = paddle.distributed.get_world_size()
        self.rank = paddle.distributed.get_rank()
        self.is_main = self.rank == 0
        self.on_gpu = paddle.get_device().startswith("gpu")
        self.amp_dtype = {"fp16": "float16", "bf16": "bfloat16"}.get(options.precision)
        if self.amp_dtype and not self.on_gpu:
            logger.warning(f"--precision {options.precision} is ignored on CPU; training in fp32")
            self.amp_dtype = None
        if options.early_stop_intervals and not options.do_eval:
            # Often a config default (train_config): not worth refusing the run for.
            logger.warning("early_stop_intervals is ignored without --do_eval (it counts "
                           "evaluations)")
        self.scaler = None
        self.ema = None  # set by EMAHook
        self.extra_writers = list(writers)
        self.writers: List[Writer] = []
        self.hooks: List[HookBase] = []
        self.register_hooks(default_hooks(options) + list(hooks))
        self.history: List[Dict[str, float]] = []  # logged rows, also handy for tests
        self.resumed: Dict[str, Any] = {}  # what load_checkpoint returned, for the hooks
        # What the hooks read about the current step:
        self.iter = 0
        self.loss: Optional[paddle.Tensor] = None
        self.step_lr = 0.0  # the lr the latest optimizer step used
        self.step_start = 0.0  # perf_counter() before the batch was fetched
        self.reader_cost = 0.0
        self.latest_metrics: Optional[Dict[str, Any]] = None  # set by EvalHook
        self.stop_requested = False
        self._static_forward_loss: Optional[Callable] = None  # built on the first step

    @property
    def max_iter(self) -> int:
        return self.options.iters

    # ------------------------------------------------------------------ hooks
    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        """Add hooks; all run in ``priority`` order (equal priorities as registered)."""
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TrainError(f"a hook must be a HookBase, got {type(hook).__name__}")
            hook.trainer = self
        self.hooks = sorted(self.hooks + list(hooks), key=lambda h: h.priority)

    def _call_hooks(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)()

    def hook_states(self) -> Dict[str, Any]:
        """Every hook's non-empty ``state_dict()``, by :func:`hook_name`."""
        taken: set = set()
        states = {hook_name(h, taken): h.state_dict() for h in self.hooks}
        return {k: v for k, v in states.items() if v}

    def _load_hook_states(self, states: Mapping[str, Any]) -> None:
        taken: set = set()
        for hook in self.hooks:
            name = hook_name(hook, taken)
            if name in states:
                hook.load_state_dict(states[name])

    def broadcast_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm running statistics (and other tensors that
        are not trained). DataParallel averages gradients only, so each rank's statistics
        drift apart; an evaluation shared by the ranks must score the statistics that rank 0
        saves, or the logged metrics are not those of the saved model. Call it on every
        rank (it is a collective)."""
        if self.world_size > 1:
            # Paddle's BatchNorm keeps its statistics as non-trainable parameters.
            frozen = [p for p in self.model.parameters() if p.stop_gradient]
            for tensor in frozen + list(self.model.buffers()):
                paddle.distributed.broadcast(tensor, src=0)

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """The weights to evaluate and keep as best: the EMA's when there is one."""
        if self.ema is None:
            yield
            return
        self.ema.swap()
        try:
            yield
        finally:
            self.ema.swap()

    # ------------------------------------------------------------------ setup
    def _resume(self) -> None:
        opts = self.options
        if opts.resume_model == "auto":  # PaddleSeg's: the newest complete checkpoint
            found = list_checkpoints(opts.save_dir) if os.path.isdir(opts.save_dir) else []
            if not found:
                logger.info(f"--resume_model auto: no checkpoint in {opts.save_dir} yet; "
                            f"starting from iteration 0")
                return
            opts.resume_model = found[-1]
        self.resumed = load_checkpoint(opts.resume_model, self.model, self.optimizer)
        self.state = self.resumed["train_state"]
        if self.state.metric_name != opts.best_metric and self.state.best_metric is not None:
            logger.warning(f"The checkpoint tracked the best {self.state.metric_name}; "
                           f"now tracking {opts.best_metric}, best_model starts afresh")
            self.state.best_metric = self.state.best_iteration = None
            self.state.evals_without_improvement = 0
        self.state.metric_name = opts.best_metric
        logger.info(f"Resumed from {opts.resume_model} at iter {self.state.iteration}")

    def _prepare(self) -> None:
        opts = self.options
        if opts.resume_model:
            self._resume()
        self.iter = self.state.iteration
        if self.amp_dtype == "float16":
            self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
        if self.amp_dtype and opts.amp_level == "O2":
            self.model, self.optimizer = paddle.amp.decorate(
                models=self.model, optimizers=self.optimizer, level="O2", dtype=self.amp_dtype)
            self.train_model = self.model
        self.writers = (build_writers(opts) if self.is_main else []) + self.extra_writers

    def _wrap_data_parallel(self) -> None:
        if not paddle.distributed.is_initialized():
            paddle.distributed.init_parallel_env()
        has_bn = any(isinstance(layer, paddle.nn.layer.norm._BatchNormBase)
                     for layer in self.model.sublayers())
        if self.on_gpu:
            # Shares the BN parameters, so the optimizer and EMA built before still apply.
            self.model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif has_bn and self.is_main:
            logger.warning("Paddle has no CPU kernel for SyncBatchNorm: on CPU each process "
                           "normalizes with its own batch's statistics, and the saved BN "
                           "running statistics are rank 0's")
        self.train_model = paddle.DataParallel(self.model)

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainState:
        self._prepare()
        try:
            self._call_hooks("before_train")
            self._load_hook_states(self.state.extra.get("hooks") or {})
            if self.world_size > 1:
                self._wrap_data_parallel()
            if self.iter >= self.max_iter:
                logger.info(f"Nothing to do: iteration {self.iter} >= --iters {self.max_iter}")
                return self.state
            self._loop()
        finally:
            self._call_hooks("after_train")
            for writer in self.writers:
                writer.close()
            self.writers = []
        return self.state

    def _loop(self) -> None:
        loader = build_dataloader(self.train_dataset, self.options.batch_size, mode="train",
                                  num_workers=self.options.num_workers,
                                  seed=self.options.seed, rank=self.rank,
                                  world_size=self.world_size, start_iter=self.iter)
        batches = iter(loader)
        try:
            self.train_model.train()
            while self.iter < self.max_iter and not self.stop_requested:
                self.step_start = time.perf_counter()
                batch = next(batches)
                self.reader_cost = time.perf_counter() - self.step_start
                self.iter += 1
                self.state.iteration = self.iter
                self._call_hooks("before_step")
                self.loss = self.run_step(batch)
                # Before any hook: a NaN step must reach neither the EMA nor a checkpoint.
                check_finite_loss(float(self.loss), self.iter, self.options.save_dir)
                self._call_hooks("after_step")
        finally:
            batches.close()  # shuts the loader's worker processes down now, not at exit

    def _forward_loss(self, img: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        return self.loss_fn(self.train_model(img), label)

    def forward_loss(self) -> Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor]:
        """The step's forward + loss: eager, or with ``to_static_training`` the same code
        translated once into a static graph by ``paddle.jit.to_static`` (the model's
        parameters and state-dict keys are untouched; backward and the optimizer stay
        eager)."""
        if not self.options.to_static_training:
            return self._forward_loss
        if self._static_forward_loss is None:
            model, loss_fn = self.train_model, self.loss_fn  # to_static takes no bound method

            def forward_and_loss(img: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
                return loss_fn(model(img), label)

            self._static_forward_loss = paddle.jit.to_static(forward_and_loss)
            if paddle.get_device() == "cpu" and onednn.enabled():
                logger.warning("--to_static_training on the CPU: the static graph runs "
                               "Paddle's own convolutions, several times slower than the "
                               "eager step's oneDNN ones (docs/training.md)")
        return self._static_forward_loss

    def run_step(self, batch: Dict[str, Any]) -> paddle.Tensor:
        """One optimisation step on ``batch``; returns the loss."""
        img, label = batch["img"], batch["label"]
        forward_loss = self.forward_loss()
        if self.amp_dtype:
            with paddle.amp.auto_cast(level=self.options.amp_level, dtype=self.amp_dtype):
                loss = forward_loss(img, label)
        else:
            loss = forward_loss(img, label)
        if self.scaler is not None:
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.step_lr = self.optimizer.get_lr()  # what this step used; logged like PaddleSeg
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.optimizer.clear_grad()
        return loss
