"""Hooks: everything the training loop does besides the step itself.

A hook is called before and after the run and before and after every step; it sees the
trainer (``self.trainer``: iteration, model, options, state, writers) and may keep state of
its own, returned by ``state_dict()`` and saved in every checkpoint (``state.json``), so an
interrupted run resumes it exactly. Hooks run in ``priority`` order (lower first; equal
priorities keep their registration order). The built-in ones, by priority::

    10 EMAHook          update the moving average after each step
    20 LoggerHook       the [TRAIN] line and the writers (text log, VisualDL), every log_iters
    25 ProgressBarHook  a tqdm bar with an ETA (terminals only)
    30 EvalHook         evaluate every eval_interval (EMA weights swapped in)
    40 BestModelHook    keep best_model/ by the best metric
    50 EarlyStopHook    stop after N evaluations without improvement
    60 (your hooks, by default)
    70 CheckpointHook   iter_N/ every save_interval, at the end, and when stopping early

A hook of your own is a ``HookBase`` subclass registered in ``HOOKS`` and named in
``train_config.hooks`` (e.g. ``[{type: MyHook, every: 100}]``); the module that defines it
is imported through the config's ``custom_imports`` list. See docs/architecture.md.
"""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import paddle
import yaml

from paddleseg_unet.core.checkpoint import prune_checkpoints, save_checkpoint
from paddleseg_unet.core.evaluate import metric_key
from paddleseg_unet.cvlibs.registry import HOOKS
from paddleseg_unet.utils.io import atomic_write
from paddleseg_unet.utils.logger import logger

if TYPE_CHECKING:  # only for type hints: the trainer imports this module
    from paddleseg_unet.core.train import Trainer

__all__ = ["HookBase", "Writer", "TextWriter", "VisualDLWriter", "EMAHook", "LoggerHook",
           "ProgressBarHook", "EvalHook", "BestModelHook", "EarlyStopHook", "CheckpointHook",
           "format_eta"]


def format_eta(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class HookBase:
    """Override what you need; ``self.trainer`` is set when the trainer takes the hook."""

    priority: int = 60
    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """JSON-serialisable state to resume with (``{}``: nothing to keep)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def every(self, interval: int) -> bool:
        """True at every ``interval``-th iteration and at the last one."""
        it = self.trainer.iter
        return it % interval == 0 or it == self.trainer.max_iter


# ----------------------------------------------------------------------------- writers
class Writer:
    """Where logged numbers go. A new tracker is a new Writer (see VisualDLWriter)."""

    def write_train(self, iteration: int, row: Mapping[str, float]) -> None:
        pass

    def write_eval(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TextWriter(Writer):
    """PaddleSeg's [TRAIN] line in the log."""

    def write_train(self, iteration: int, row: Mapping[str, float]) -> None:
        logger.info(f"[TRAIN] epoch: {row['epoch']}, iter: {iteration}/{row['max_iter']}, "
                    f"loss: {row['loss']:.4f}, lr: {row['lr']:.6f}, "
                    f"batch_cost: {row['batch_cost']:.4f}, "
                    f"reader_cost: {row['reader_cost']:.5f}, "
                    f"ips: {row['ips']:.4f} samples/sec | ETA {format_eta(row['eta'])}")


class VisualDLWriter(Writer):
    """Scalars under ``Train/`` and ``Evaluate/`` in ``log_dir`` (``--use_vdl``)."""

    TRAIN_KEYS = ("loss", "lr", "batch_cost", "reader_cost")

    def __init__(self, log_dir: str) -> None:
        from visualdl import LogWriter

        self.vdl = LogWriter(log_dir)

    def write_train(self, iteration: int, row: Mapping[str, float]) -> None:
        for key in self.TRAIN_KEYS:
            self.vdl.add_scalar(f"Train/{key}", row[key], iteration)

    def write_eval(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.vdl.add_scalar(f"Evaluate/{key}", float(value), iteration)

    def close(self) -> None:
        self.vdl.close()


# ----------------------------------------------------------------------------- hooks
@HOOKS.register()
class EMAHook(HookBase):
    """Keeps ``trainer.ema`` (an :class:`~paddleseg_unet.core.train.EMA`) current; its
    weights are saved in checkpoints as ``ema.pdparams``."""

    priority = 10

    def __init__(self, decay: float, warmup: bool = False) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)  # PaddleSeg's ramp: min(1 - 1/(iter + 1), decay)

    def before_train(self) -> None:
        from paddleseg_unet.core.train import EMA

        trainer = self.trainer
        trainer.ema = EMA(trainer.model, self.decay)
        saved = trainer.resumed.get("ema")
        if saved is not None:
            trainer.ema.set_state_dict(saved)
        elif trainer.options.resume_model:
            logger.info("The checkpoint has no EMA weights; the average starts from the "
                        "resumed weights")

    def after_step(self) -> None:
        it = self.trainer.iter
        self.trainer.ema.update(min(1 - 1 / (it + 1), self.decay) if self.warmup else None)


@HOOKS.register()
class LoggerHook(HookBase):
    """Every ``log_iters``: the mean loss over the window, lr, timings and ETA, to every
    writer (rank 0) and to ``trainer.history`` (every rank)."""

    priority = 20

    def __init__(self, log_iters: int) -> None:
        self.log_iters = int(log_iters)

    def before_train(self) -> None:
        self.run_start = time.perf_counter()
        self.start_iter = self.trainer.iter
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = paddle.zeros([])
        self.batch_cost = self.reader_cost = 0.0
        self.count = 0

    def after_step(self) -> None:
        trainer = self.trainer
        self.loss_sum += trainer.loss.detach()
        self.batch_cost += time.perf_counter() - trainer.step_start
        self.reader_cost += trainer.reader_cost
        self.count += 1
        if not self.every(self.log_iters):
            return
        it, opts, n = trainer.iter, trainer.options, self.count
        batch_cost = self.batch_cost / n
        samples = opts.batch_size * trainer.world_size
        elapsed = time.perf_counter() - self.run_start
        row = {"iter": it, "max_iter": trainer.max_iter,
               "epoch": (it - 1) * samples // max(len(trainer.train_dataset), 1) + 1,
               "loss": float(self.loss_sum) / n, "lr": trainer.step_lr,
               "batch_cost": batch_cost, "reader_cost": self.reader_cost / n,
               "ips": samples / max(batch_cost, 1e-12),
               "eta": elapsed / max(it - self.start_iter, 1) * (trainer.max_iter - it)}
        trainer.history.append({k: row[k] for k in ("iter", "epoch", "loss", "lr",
                                                     "batch_cost", "reader_cost", "ips")})
        if trainer.is_main:
            for writer in trainer.writers:
                writer.write_train(it, row)
        self._reset()


@HOOKS.register()
class ProgressBarHook(HookBase):
    """A tqdm bar with an ETA, when rank 0 writes to a terminal (not into a log file)."""

    priority = 25
    bar: Any = None

    def before_train(self) -> None:
        self.bar = None
        if self.trainer.is_main and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.iter,
                            unit="it", dynamic_ncols=True, leave=False)

    def after_step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()


@HOOKS.register()
class EvalHook(HookBase):
    """Every ``interval`` iterations (and at the last), evaluate on the val set; the EMA
    weights, when there are any, are the ones evaluated. The results land in
    ``trainer.latest_metrics`` for the hooks after this one."""

    priority = 30

    def __init__(self, interval: int) -> None:
        self.interval = int(interval)

    def after_step(self) -> None:
        trainer = self.trainer
        trainer.latest_metrics = None
        if not self.every(self.interval):
            return
        with trainer.evaluation_weights():
            trainer.broadcast_buffers()  # every rank scores the statistics that get saved
            metrics = trainer.evaluate_fn(trainer.model, trainer.val_dataset,
                                          trainer.num_classes,
                                          options=trainer.options.eval_options)
        trainer.latest_metrics = metrics
        if trainer.is_main:
            for writer in trainer.writers:
                writer.write_eval(trainer.iter, metrics)
        trainer.train_model.train()


@HOOKS.register()
class BestModelHook(HookBase):
    """After each evaluation, ``best_model/`` holds the weights with the best ``metric``
    (``trainer.state`` keeps the best value, its iteration, and the count of evaluations
    since it improved)."""

    priority = 40

    def __init__(self, metric: str = "mIoU") -> None:
        self.metric = metric

    def after_step(self) -> None:
        trainer = self.trainer
        metrics = trainer.latest_metrics
        if metrics is None:
            return
        from paddleseg_unet.core.train import TrainError

        key = metric_key(self.metric)
        if key not in metrics:
            scalars = [k for k, v in metrics.items() if isinstance(v, (int, float))]
            raise TrainError(f"--best_metric {self.metric!r} is not among the evaluation "
                             f"results ({', '.join(scalars)}); AUC needs test_config.auc_roc: "
                             f"True")
        value, state = float(metrics[key]), trainer.state
        if state.best_metric is None or value > state.best_metric:
            state.best_metric, state.best_iteration = value, trainer.iter
            state.evals_without_improvement = 0
            if trainer.is_main:
                # Before iter_N: a crash in between leaves a state.json that does not yet
                # claim this best, and the resumed run evaluates it again.
                with trainer.evaluation_weights():
                    save_checkpoint(os.path.join(trainer.options.save_dir, "best_model"),
                                    trainer.model, None, state, trainer.config)
        else:
            state.evals_without_improvement += 1
        if trainer.is_main:
            logger.info(f"[EVAL] The model with the best validation {self.metric} "
                        f"({state.best_metric:.4f}) was saved at iter {state.best_iteration}.")


@HOOKS.register()
class EarlyStopHook(HookBase):
    """Stop once ``patience`` evaluations in a row did not improve the best metric."""

    priority = 50

    def __init__(self, patience: int) -> None:
        self.patience = int(patience)

    def after_step(self) -> None:
        trainer = self.trainer
        if trainer.latest_metrics is None:
            return
        if trainer.state.evals_without_improvement >= self.patience:
            logger.info(f"Early stop at iter {trainer.iter}: no {trainer.options.best_metric} "
                        f"improvement in {self.patience} evaluations")
            trainer.stop_requested = True


@HOOKS.register()
class CheckpointHook(HookBase):
    """``save_dir/iter_N`` every ``interval`` iterations, at the last one and when the run
    stops early; keeps the newest ``keep_max``. Writes ``config.yml`` at the start."""

    priority = 70

    def __init__(self, interval: int, keep_max: int = 5) -> None:
        self.interval = int(interval)
        self.keep_max = int(keep_max)

    def before_train(self) -> None:
        trainer = self.trainer
        if trainer.is_main:
            os.makedirs(trainer.options.save_dir, exist_ok=True)
            if trainer.config is not None:
                with atomic_write(os.path.join(trainer.options.save_dir, "config.yml"), "w",
                                  encoding="utf-8") as f:
                    yaml.safe_dump(trainer.config, f, sort_keys=False, default_flow_style=None)

    def after_step(self) -> None:
        trainer = self.trainer
        if not (self.every(self.interval) or trainer.stop_requested) or not trainer.is_main:
            return
        trainer.state.extra["hooks"] = trainer.hook_states()
        ema_state = trainer.ema.state_dict() if trainer.ema is not None else None
        save_dir = trainer.options.save_dir
        folder = save_checkpoint(os.path.join(save_dir, f"iter_{trainer.iter}"), trainer.model,
                                 trainer.optimizer, trainer.state, trainer.config,
                                 ema_state=ema_state)
        prune_checkpoints(save_dir, self.keep_max)
        logger.info(f"Saved checkpoint {folder}")


def default_hooks(options: Any) -> List[HookBase]:
    """The hooks ``tools/train.py`` runs, from its options (``TrainOptions``)."""
    hooks: List[HookBase] = []
    if options.ema_decay:
        hooks.append(EMAHook(options.ema_decay, warmup=options.ema_warmup))
    hooks += [LoggerHook(options.log_iters), ProgressBarHook()]
    if options.do_eval:
        hooks += [EvalHook(options.eval_interval or options.save_interval),
                  BestModelHook(options.best_metric)]
        if options.early_stop_intervals:
            hooks.append(EarlyStopHook(options.early_stop_intervals))
    hooks.append(CheckpointHook(options.save_interval, options.keep_checkpoint_max))
    return hooks


def build_writers(options: Any) -> List[Writer]:
    writers: List[Writer] = [TextWriter()]
    if options.use_vdl:
        writers.append(VisualDLWriter(os.path.join(options.save_dir, "vdl_log")))
    return writers


def hook_name(hook: HookBase, taken: Optional[set] = None) -> str:
    """The key of a hook's state in a checkpoint: its class name (``#2`` for a second)."""
    name = type(hook).__name__
    if taken is not None:
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base}#{n}"
        taken.add(name)
    return name
