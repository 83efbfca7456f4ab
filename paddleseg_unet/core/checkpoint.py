"""Training checkpoints that survive crashes.

A checkpoint is a folder ``iter_N/`` (or ``best_model/``) holding

- ``model.pdparams``: the weights, in PaddleSeg's format (PaddleSeg can load it);
- ``model.pdopt``: the optimizer state, including the lr scheduler's;
- ``state.json``: iteration, best metric so far, and the resolved config;
- ``rng.pkl``: Python, NumPy and Paddle random states.

Each is written into a hidden temporary folder which is renamed into place only when every
file is complete, so a crash at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import paddle

from paddleseg_unet.utils.weights import WeightsError, load_pdparams, save_pdparams

MODEL_FILE = "model.pdparams"
OPTIMIZER_FILE = "model.pdopt"
STATE_FILE = "state.json"
RNG_FILE = "rng.pkl"
_ITER_DIR = re.compile(r"^iter_(\d+)$")


class CheckpointError(Exception):
    """A checkpoint that cannot be written or resumed; the message names the file."""


@dataclass
class TrainState:
    """What the trainer needs, besides weights and optimizer, to continue a run."""
    iteration: int = 0
    best_metric: Optional[float] = None
    best_iteration: Optional[int] = None
    metric_name: str = "mIoU"
    evals_without_improvement: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "TrainState":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _rng_states() -> Dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "paddle": paddle.get_rng_state()}


def _restore_rng(states: Dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    paddle.set_rng_state(states["paddle"])


def _replace_dir(tmp_dir: str, final_dir: str) -> None:
    """Move a finished temporary folder into place; an older folder of the same name is
    moved aside first and removed only after the new one is in place."""
    old = None
    if os.path.exists(final_dir):
        old = f"{final_dir}.old-{os.getpid()}"
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(folder: str, model: paddle.nn.Layer, optimizer: Optional[Any],
                    state: TrainState, config: Optional[Dict[str, Any]] = None) -> str:
    """Write a complete checkpoint to ``folder`` atomically and return it."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(folder)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    save_pdparams(model.state_dict(), os.path.join(tmp_dir, MODEL_FILE))
    if optimizer is not None:
        paddle.save(optimizer.state_dict(), os.path.join(tmp_dir, OPTIMIZER_FILE))
    with open(os.path.join(tmp_dir, RNG_FILE), "wb") as f:
        pickle.dump(_rng_states(), f, protocol=4)
    payload = {"train_state": state.to_json(), "config": config}
    with open(os.path.join(tmp_dir, STATE_FILE), "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=str)
    _replace_dir(tmp_dir, folder)
    return folder


def list_checkpoints(save_dir: str) -> List[str]:
    """``iter_N`` folders of ``save_dir``, oldest first."""
    if not os.path.isdir(save_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(save_dir)
             if (m := _ITER_DIR.match(name)) and os.path.isdir(os.path.join(save_dir, name))]
    return [os.path.join(save_dir, name) for _, name in sorted(found)]


def prune_checkpoints(save_dir: str, keep: int) -> List[str]:
    """Remove all but the newest ``keep`` iteration checkpoints; return the removed ones."""
    if keep <= 0:
        return []
    stale = list_checkpoints(save_dir)[:-keep]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def load_checkpoint(folder: str, model: paddle.nn.Layer, optimizer: Optional[Any] = None,
                    restore_rng: bool = True) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` and ``optimizer``.

    Returns ``{"train_state": TrainState, "config": dict or None}``. Every file is checked
    before anything is changed, so a bad checkpoint leaves the model as it was.
    """
    if not os.path.isdir(folder):
        raise CheckpointError(f"Cannot resume: {folder} is not a checkpoint folder "
                              f"(expected save_dir/iter_N with {MODEL_FILE} and {STATE_FILE})")
    paths = {name: os.path.join(folder, name) for name in
             (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, RNG_FILE)}
    needed = [MODEL_FILE, STATE_FILE] + ([OPTIMIZER_FILE] if optimizer is not None else [])
    missing = [paths[n] for n in needed if not os.path.isfile(paths[n])]
    if missing:
        raise CheckpointError(f"Cannot resume from {folder}: missing {', '.join(missing)}. "
                              f"The checkpoint is incomplete; resume from an older iter_N.")
    try:
        with open(paths[STATE_FILE], "r", encoding="utf-8") as f:
            payload = json.load(f)
        train_state = TrainState.from_json(payload["train_state"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"Cannot resume: {paths[STATE_FILE]} is corrupt ({exc}); "
                              f"resume from an older iter_N.") from None
    try:
        params = load_pdparams(paths[MODEL_FILE])
    except WeightsError as exc:
        raise CheckpointError(f"Cannot resume: {exc}") from None
    opt_state = None
    if optimizer is not None:
        try:
            opt_state = paddle.load(paths[OPTIMIZER_FILE])
        except Exception as exc:  # paddle.load raises many kinds on a damaged pickle
            raise CheckpointError(f"Cannot resume: {paths[OPTIMIZER_FILE]} is unreadable "
                                  f"({type(exc).__name__}: {exc}); resume from an older "
                                  f"iter_N.") from None
    rng = None
    if restore_rng and os.path.isfile(paths[RNG_FILE]):
        try:
            with open(paths[RNG_FILE], "rb") as f:
                rng = pickle.load(f)
        except Exception as exc:
            raise CheckpointError(f"Cannot resume: {paths[RNG_FILE]} is unreadable "
                                  f"({exc})") from None
    expected = model.state_dict()
    wrong = [k for k in expected if k not in params or
             tuple(params[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(f"Cannot resume: {paths[MODEL_FILE]} does not fit this model "
                              f"({len(wrong)} missing or mis-shaped keys, e.g. {wrong[:3]}); "
                              f"was it written with another config?")
    model.set_state_dict({k: params[k] for k in expected})
    if opt_state is not None:
        optimizer.set_state_dict(opt_state)
    if rng is not None:
        _restore_rng(rng)
    return {"train_state": train_state, "config": payload.get("config")}
