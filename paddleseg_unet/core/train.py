"""The iteration-based training loop.

One ``Trainer`` owns the loop; the things that happen every N iterations (log, evaluate,
save) are small methods beside it, so the whole engine reads top to bottom. Exact resume:
the model, optimizer (with its lr scheduler), RNG states, EMA, best metric, early-stop count
and the loader position are all restored, and the loader's per-sample randomness depends
only on (seed, draw index), so an interrupted run continues with the same batches and the
same augmentations (on CPU bit for bit; see docs/training.md).
"""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import paddle

from paddleseg_unet.core.checkpoint import (TrainState, list_checkpoints, load_checkpoint,
                                            prune_checkpoints, save_checkpoint)
from paddleseg_unet.core.evaluate import evaluate, metric_key
from paddleseg_unet.datasets.loader import build_dataloader
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
    best_metric: str = "mIoU"
    eval_options: Dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrainError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.amp_level not in AMP_LEVELS:
            raise TrainError(f"--amp_level must be O1 or O2, got {self.amp_level!r}")
        for name in ("iters", "batch_size", "save_interval", "log_iters"):
            if int(getattr(self, name)) <= 0:
                raise TrainError(f"--{name} must be a positive integer, "
                                 f"got {getattr(self, name)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise TrainError(f"--ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.early_stop_intervals is not None and int(self.early_stop_intervals) <= 0:
            raise TrainError(f"--early_stop_intervals must be a positive integer, "
                             f"got {self.early_stop_intervals}")


def format_eta(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
    def update(self) -> None:
        for key, shadow in self.shadow.items():
            shadow.set_value(self.decay * shadow + (1.0 - self.decay) * self.live[key])

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
    """Train ``model`` on ``train_dataset`` for ``options.iters`` iterations."""

    def __init__(self, model: paddle.nn.Layer, train_dataset: Any, loss_fn: Callable,
                 optimizer: Any, lr_scheduler: Any, options: TrainOptions,
                 val_dataset: Any = None, num_classes: Optional[int] = None,
                 config: Optional[Dict[str, Any]] = None,
                 evaluate_fn: Optional[Callable[..., Dict[str, Any]]] = None) -> None:
        options.check()
        if options.do_eval and val_dataset is None:
            raise TrainError("--do_eval needs a val_dataset section in the config")
        self.options = options
        self.model = model
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
        self.ema = None
        self.vdl = None
        self.history: List[Dict[str, float]] = []  # logged rows, also handy for tests
        self._step_lr = 0.0  # the lr the latest optimizer step used

    # ------------------------------------------------------------------ setup
    def _prepare(self) -> None:
        opts = self.options
        loaded: Dict[str, Any] = {}
        if opts.resume_model:
            loaded = load_checkpoint(opts.resume_model, self.model, self.optimizer)
            self.state = loaded["train_state"]
            if self.state.metric_name != opts.best_metric and self.state.best_metric is not None:
                logger.warning(f"The checkpoint tracked the best {self.state.metric_name}; "
                               f"now tracking {opts.best_metric}, best_model starts afresh")
                self.state.best_metric = self.state.best_iteration = None
                self.state.evals_without_improvement = 0
            self.state.metric_name = opts.best_metric
            logger.info(f"Resumed from {opts.resume_model} at iter {self.state.iteration}")
        if self.amp_dtype == "float16":
            self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024)
        if self.amp_dtype and opts.amp_level == "O2":
            self.model, self.optimizer = paddle.amp.decorate(
                models=self.model, optimizers=self.optimizer, level="O2", dtype=self.amp_dtype)
        if opts.ema_decay:
            self.ema = EMA(self.model, opts.ema_decay)
            if loaded.get("ema") is not None:
                self.ema.set_state_dict(loaded["ema"])
            elif opts.resume_model:
                logger.info("The checkpoint has no EMA weights; the average starts from "
                            "the resumed weights")
        self.train_model = self.model
        if self.world_size > 1:
            self._wrap_data_parallel()
        if self.is_main:
            os.makedirs(opts.save_dir, exist_ok=True)
            if self.config is not None:
                from paddleseg_unet.cvlibs.config import Config
                Config(copy.deepcopy(self.config)).dump(os.path.join(opts.save_dir, "config.yml"))
            if opts.use_vdl:
                from visualdl import LogWriter
                self.vdl = LogWriter(os.path.join(opts.save_dir, "vdl_log"))

    def _wrap_data_parallel(self) -> None:
        if not paddle.distributed.is_initialized():
            paddle.distributed.init_parallel_env()
        has_bn = any(isinstance(layer, paddle.nn.layer.norm._BatchNormBase)
                     for layer in self.model.sublayers())
        if self.on_gpu:
            # Shares the BN parameters, so the optimizer and EMA built above still apply.
            self.model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif has_bn and self.is_main:
            logger.warning("Paddle has no CPU kernel for SyncBatchNorm: on CPU each process "
                           "normalizes with its own batch's statistics, and the saved BN "
                           "running statistics are rank 0's")
        self.train_model = paddle.DataParallel(self.model)

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainState:
        self._prepare()
        opts = self.options
        start = self.state.iteration
        if start >= opts.iters:
            logger.info(f"Nothing to do: iteration {start} >= --iters {opts.iters}")
            self._close()
            return self.state
        loader = build_dataloader(self.train_dataset, opts.batch_size, mode="train",
                                  num_workers=opts.num_workers, seed=opts.seed,
                                  rank=self.rank, world_size=self.world_size,
                                  start_iter=start)
        batches = iter(loader)
        bar = self._progress_bar(start)
        try:
            self._loop(batches, bar, start)
        finally:
            batches.close()  # shuts the loader's worker processes down now, not at exit
            if bar is not None:
                bar.close()
            self._close()
        return self.state

    def _loop(self, batches: Iterator[Dict[str, Any]], bar: Any, start: int) -> None:
        opts = self.options
        self.train_model.train()
        loss_sum = paddle.zeros([])
        window = {"batch": 0.0, "reader": 0.0, "n": 0}
        run_start = time.perf_counter()
        iteration = start
        tic = time.perf_counter()
        while iteration < opts.iters:
            batch = next(batches)
            reader_cost = time.perf_counter() - tic
            iteration += 1
            loss = self._step(batch)
            check_finite_loss(float(loss), iteration, opts.save_dir)
            loss_sum += loss.detach()
            batch_cost = time.perf_counter() - tic
            window["batch"] += batch_cost
            window["reader"] += reader_cost
            window["n"] += 1
            if bar is not None:
                bar.update(1)
            if iteration % opts.log_iters == 0 or iteration == opts.iters:
                self._log(iteration, float(loss_sum) / window["n"], window, run_start, start)
                loss_sum = paddle.zeros([])
                window = {"batch": 0.0, "reader": 0.0, "n": 0}
            if iteration % opts.save_interval == 0 or iteration == opts.iters:
                self.state.iteration = iteration
                stop = self._evaluate_and_save(iteration)
                self.train_model.train()
                if stop:
                    logger.info(f"Early stop at iter {iteration}: no {opts.best_metric} "
                                f"improvement in {opts.early_stop_intervals} evaluations")
                    break
            tic = time.perf_counter()

    def _close(self) -> None:
        if self.vdl is not None:
            self.vdl.close()
            self.vdl = None

    def _step(self, batch: Dict[str, Any]) -> paddle.Tensor:
        img, label = batch["img"], batch["label"]
        if self.amp_dtype:
            with paddle.amp.auto_cast(level=self.options.amp_level, dtype=self.amp_dtype):
                logits = self.train_model(img)
                loss = self.loss_fn(logits, label)
        else:
            logits = self.train_model(img)
            loss = self.loss_fn(logits, label)
        if self.scaler is not None:
            scaled = self.scaler.scale(loss)
            scaled.backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self._step_lr = self.optimizer.get_lr()  # what this step used; logged like PaddleSeg
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.optimizer.clear_grad()
        if self.ema is not None:
            self.ema.update()
        return loss

    # ------------------------------------------------------------------ every N iterations
    def _progress_bar(self, start: int) -> Any:
        import sys
        if not (self.is_main and sys.stdout.isatty()):
            return None
        from tqdm import tqdm
        return tqdm(total=self.options.iters, initial=start, unit="it", dynamic_ncols=True,
                    leave=False)

    def _log(self, iteration: int, loss: float, window: Dict[str, float], run_start: float,
             start: int) -> None:
        opts = self.options
        n = max(window["n"], 1)
        batch_cost, reader_cost = window["batch"] / n, window["reader"] / n
        done = iteration - start
        elapsed = time.perf_counter() - run_start
        eta = elapsed / max(done, 1) * (opts.iters - iteration)
        lr = self._step_lr
        ips = opts.batch_size * self.world_size / max(batch_cost, 1e-12)
        epoch = (iteration - 1) * opts.batch_size * self.world_size // max(
            len(self.train_dataset), 1) + 1
        row = {"iter": iteration, "epoch": epoch, "loss": loss, "lr": lr,
               "batch_cost": batch_cost, "reader_cost": reader_cost, "ips": ips}
        self.history.append(row)
        if not self.is_main:
            return
        logger.info(f"[TRAIN] epoch: {epoch}, iter: {iteration}/{opts.iters}, loss: {loss:.4f}, "
                    f"lr: {lr:.6f}, batch_cost: {batch_cost:.4f}, reader_cost: {reader_cost:.5f}, "
                    f"ips: {ips:.4f} samples/sec | ETA {format_eta(eta)}")
        if self.vdl is not None:
            for key in ("loss", "lr", "batch_cost", "reader_cost"):
                self.vdl.add_scalar(f"Train/{key}", row[key], iteration)

    def _evaluate_and_save(self, iteration: int) -> bool:
        """Evaluate (if asked), save ``iter_N`` and ``best_model``; True to stop early."""
        opts = self.options
        stop = False
        if opts.do_eval:
            if self.ema is not None:
                self.ema.swap()  # evaluate (and keep as best) the averaged weights
            try:
                metrics = self.evaluate_fn(self.model, self.val_dataset, self.num_classes,
                                           num_workers=opts.num_workers, **opts.eval_options)
                stop = self._track_best(iteration, metrics)
                if self.state.best_iteration == iteration and self.is_main:
                    # Before iter_N: a crash in between leaves a state.json that does not
                    # yet claim this best, and the resumed run evaluates it again.
                    save_checkpoint(os.path.join(opts.save_dir, "best_model"), self.model, None,
                                    self.state, self.config)
            finally:
                if self.ema is not None:
                    self.ema.swap()
        if self.is_main:
            ema_state = self.ema.state_dict() if self.ema is not None else None
            folder = save_checkpoint(os.path.join(opts.save_dir, f"iter_{iteration}"),
                                     self.model, self.optimizer, self.state, self.config,
                                     ema_state=ema_state)
            prune_checkpoints(opts.save_dir, opts.keep_checkpoint_max)
            logger.info(f"Saved checkpoint {folder}")
        return stop

    def _track_best(self, iteration: int, metrics: Dict[str, Any]) -> bool:
        name = self.options.best_metric
        key = metric_key(name)
        if key not in metrics:
            scalars = [k for k, v in metrics.items() if isinstance(v, (int, float))]
            raise TrainError(f"--best_metric {name!r} is not among the evaluation results "
                             f"({', '.join(scalars)}); AUC needs test_config.auc_roc: True")
        value = float(metrics[key])
        if self.vdl is not None:
            for key, val in metrics.items():
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    self.vdl.add_scalar(f"Evaluate/{key}", float(val), iteration)
        if self.state.best_metric is None or value > self.state.best_metric:
            self.state.best_metric, self.state.best_iteration = value, iteration
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
        if self.is_main:
            logger.info(f"[EVAL] The model with the best validation {name} "
                        f"({self.state.best_metric:.4f}) was saved at iter "
                        f"{self.state.best_iteration}.")
        limit = self.options.early_stop_intervals
        return bool(limit) and self.state.evals_without_improvement >= limit
