"""Training checkpoints that survive crashes.

A checkpoint is a folder ``iter_N/`` (or ``best_model/``) holding

- ``model.pdparams``: the weights, in PaddleSeg's format (PaddleSeg can load it);
- ``model.pdopt``: the optimizer state in Paddle's own format, including the lr scheduler's;
- ``state.json``: iteration, best metric so far, the parameters' internal names (so the
  optimizer state can be matched to a model built in another order) and the config;
- ``rng.json``: Python, NumPy and Paddle random states (older checkpoints: ``rng.pkl``);
- ``ema.pdparams``: the averaged weights, only when training with EMA.

Reading never runs code from the folder: every pickle (``.pdparams``, ``.pdopt``, an old
``rng.pkl``) goes through the allow-list unpickler of ``utils.safe_pickle``. Writing never
stores NaN or Inf: :func:`assert_finite_state` checks the weights, EMA and optimizer state
first, so a diverged run cannot replace a good checkpoint with a useless one.

Each is written (and fsynced) into a hidden temporary folder which is renamed into place
only when every file is complete, so a crash at any moment leaves the previous checkpoint
intact; temporary folders of dead processes are removed by :func:`prune_checkpoints`.
"""
from __future__ import annotations

import glob
import json
import math
import numbers
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import paddle

from paddleseg_unet.utils.io import fsync_path, replace_dir
from paddleseg_unet.utils.safe_pickle import (GeneratorStateRecord, SafePickleError,
                                              UnsafePickleError, load_pickle)
from paddleseg_unet.utils.weights import (BOOKKEEPING_KEY, UnsafeWeightsError, WeightsError,
                                          load_pdparams, save_pdparams)

MODEL_FILE = "model.pdparams"
OPTIMIZER_FILE = "model.pdopt"
STATE_FILE = "state.json"
RNG_FILE = "rng.json"
LEGACY_RNG_FILE = "rng.pkl"  # what checkpoints held before rng.json; read, never written
EMA_FILE = "ema.pdparams"
_ITER_DIR = re.compile(r"^iter_(\d+)$")
_TEMP_DIR = re.compile(r"^\..+\.tmp-(\d+)$")
# Keys of an optimizer state dict that are not per-parameter accumulators.
_OPT_SPECIAL_KEYS = ("LR_Scheduler", "master_weights")


class CheckpointError(Exception):
    """A checkpoint that cannot be written or resumed; the message names the file."""


class NonFiniteStateError(CheckpointError):
    """Weights (or optimizer state) holding NaN or Inf, refused before they are saved."""


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
        """Rebuild from :meth:`to_json` output; a wrong type raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"train_state must be a mapping, got {type(data).__name__}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**known)

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        if not is_int(state.iteration) or not is_int(state.evals_without_improvement):
            raise ValueError("iteration and evals_without_improvement must be integers >= 0")
        if state.best_iteration is not None and not is_int(state.best_iteration):
            raise ValueError(f"best_iteration must be an integer, got {state.best_iteration!r}")
        if state.best_metric is not None and (isinstance(state.best_metric, bool) or
                                              not isinstance(state.best_metric, numbers.Real)):
            raise ValueError(f"best_metric must be a number, got {state.best_metric!r}")
        if not isinstance(state.metric_name, str) or not isinstance(state.extra, dict):
            raise ValueError("metric_name must be a string and extra a mapping")
        return state


def _rng_states() -> Dict[str, Any]:
    """Python, NumPy and Paddle random states as JSON data (``rng.json``): no pickle."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "paddle": [_generator_json(g.__getstate__()) for g in paddle.get_rng_state()]}


def _generator_json(state: Tuple[int, int, int, List[int]]) -> List[Any]:
    """A Paddle generator's ``__getstate__`` (device, seed, offset, state text as a list
    of character codes) with the text as a string."""
    device, seed, offset, text = state
    return [device, seed, offset, bytes(text).decode("ascii")]


def _legacy_rng_as_json(states: Any) -> Dict[str, Any]:
    """An old ``rng.pkl`` (as the allow-list unpickler returns it) in ``rng.json``'s form."""
    if not isinstance(states, dict) or not {"python", "numpy", "paddle"} <= set(states):
        raise ValueError("not a dict of python/numpy/paddle states")
    version, internal, gauss = states["python"]
    kind, keys, pos, has_gauss, cached = states["numpy"]
    paddle_states = []
    for record in states["paddle"]:
        if not isinstance(record, GeneratorStateRecord) or not isinstance(record.state, tuple):
            raise ValueError(f"paddle state is a {type(record).__name__}, not a GeneratorState")
        paddle_states.append(_generator_json(record.state))
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, np.asarray(keys).tolist(), pos, has_gauss, cached],
            "paddle": paddle_states}


def _parse_rng(data: Any) -> Tuple[Any, Any, List[Any]]:
    """``rng.json`` data -> (python, numpy, paddle) states ready to set; every part is
    tried on a throwaway generator first, so a bad file raises before anything changes."""
    if not isinstance(data, dict) or not {"python", "numpy", "paddle"} <= set(data):
        raise ValueError("not a mapping of python/numpy/paddle states")
    version, internal, gauss = data["python"]
    python_state = (int(version), tuple(int(x) for x in internal),
                    None if gauss is None else float(gauss))
    random.Random().setstate(python_state)
    kind, keys, pos, has_gauss, cached = data["numpy"]
    numpy_state = (str(kind), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss),
                   float(cached))
    np.random.RandomState().set_state(numpy_state)
    generator_type = paddle.base.core.GeneratorState  # pybind: no constructor, only setstate
    paddle_states = []
    for device, seed, offset, text in data["paddle"]:
        generator = generator_type.__new__(generator_type)
        generator.__setstate__((int(device), int(seed), int(offset),
                                list(str(text).encode("ascii"))))
        paddle_states.append(generator)
    return python_state, numpy_state, paddle_states


def _restore_rng(states: Tuple[Any, Any, List[Any]]) -> None:
    python_state, numpy_state, paddle_states = states
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    paddle.set_rng_state(paddle_states)


def assert_finite_state(state: Mapping[str, Any], where: str) -> None:
    """Raise :class:`NonFiniteStateError` if an array, tensor or float of ``state`` (nested
    mappings included) is NaN or Inf; ``where`` names the file it was about to go to."""
    for key, value in state.items():
        if isinstance(value, Mapping):
            assert_finite_state(value, f"{where}: {key}")
            continue
        if isinstance(value, paddle.Tensor):
            value = value.numpy()
        if isinstance(value, float):
            finite = math.isfinite(value)
        elif isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.inexact):
            finite = bool(np.isfinite(value).all())
        else:
            continue
        if not finite:
            raise NonFiniteStateError(
                f"Refusing to write {where}: {key!r} holds NaN or Inf, the training has "
                f"diverged. Nothing was saved and the previous checkpoints are kept; lower "
                f"the learning rate, check the loss weights and the data, then resume from "
                f"the last good checkpoint")


def parameter_names(model: paddle.nn.Layer) -> Dict[str, str]:
    """Structured name -> Paddle's internal name (``conv2d_3.w_0``) of every parameter.

    The internal names key the optimizer state and depend on how many layers the process
    created before, so they are recorded to re-key the state on resume."""
    return {key: param.name for key, param in model.named_parameters()}


def _rekey_optimizer_state(opt_state: Dict[str, Any], saved: Mapping[str, str],
                           model: paddle.nn.Layer, path: str) -> Dict[str, Any]:
    """Rename the accumulators of ``opt_state`` (``<internal name>_<acc>_<n>``) from the
    internal names recorded at save time to those of ``model`` in this process."""
    if not saved:  # written by PaddleSeg or another tool: Paddle's own matching
        return opt_state
    current = parameter_names(model)
    renames = {saved[k]: current[k] for k in saved if k in current}
    # Longest first, so 'conv2d_1.w_0' never claims the accumulators of 'conv2d_1.w_0x'.
    olds = sorted(renames, key=len, reverse=True)
    from paddle.base import unique_name

    counters = getattr(unique_name.generator, "ids", {})
    result: Dict[str, Any] = {}
    for key, value in opt_state.items():
        if key in _OPT_SPECIAL_KEYS:
            result[key] = value
            continue
        old = next((name for name in olds if key.startswith(name + "_")), None)
        if old is None:
            raise CheckpointError(f"Cannot resume: {path} holds optimizer state {key!r} for "
                                  f"a parameter this model does not have; was it written "
                                  f"with another config?")
        accumulator = re.sub(r"_\d+$", "", key[len(old) + 1:])
        stem = f"{renames[old]}_{accumulator}"
        # Paddle names the accumulator it is about to create stem_<next free counter>.
        result[f"{stem}_{counters.get(stem, 0)}"] = value
    if isinstance(opt_state.get("master_weights"), dict):
        result["master_weights"] = {renames.get(k, k): v
                                    for k, v in opt_state["master_weights"].items()}
    return result


def save_checkpoint(folder: str, model: paddle.nn.Layer, optimizer: Optional[Any],
                    state: TrainState, config: Optional[Dict[str, Any]] = None,
                    ema_state: Optional[Mapping[str, Any]] = None) -> str:
    """Write a complete checkpoint to ``folder`` atomically and return it.

    ``optimizer`` None (``best_model/``) writes no ``model.pdopt``; ``ema_state`` (the EMA's
    averaged weights) adds ``ema.pdparams``. NaN or Inf anywhere raises
    :class:`NonFiniteStateError` before anything is written."""
    model_state = model.state_dict()
    optimizer_state = optimizer.state_dict() if optimizer is not None else None
    for name, content in ((MODEL_FILE, model_state), (EMA_FILE, ema_state),
                          (OPTIMIZER_FILE, optimizer_state)):
        if content is not None:
            assert_finite_state(content, f"{os.path.join(folder, name)} (iteration "
                                         f"{state.iteration})")
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(folder)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        save_pdparams(model_state, os.path.join(tmp_dir, MODEL_FILE))
        if ema_state is not None:
            save_pdparams(ema_state, os.path.join(tmp_dir, EMA_FILE))
        written = []
        if optimizer_state is not None:
            written.append(os.path.join(tmp_dir, OPTIMIZER_FILE))
            paddle.save(optimizer_state, written[-1])
        written.append(os.path.join(tmp_dir, RNG_FILE))
        with open(written[-1], "w", encoding="utf-8") as f:
            json.dump(_rng_states(), f)
        payload = {"train_state": state.to_json(), "parameter_names": parameter_names(model),
                   "config": config}
        written.append(os.path.join(tmp_dir, STATE_FILE))
        with open(written[-1], "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, default=str)
        for path in written:
            fsync_path(path)
        fsync_path(tmp_dir)
    except (OSError, WeightsError) as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise CheckpointError(f"Cannot write checkpoint {folder}: {exc}") from None
    replace_dir(tmp_dir, folder)
    return folder


def list_checkpoints(save_dir: str) -> List[str]:
    """``iter_N`` folders of ``save_dir``, oldest first."""
    if not os.path.isdir(save_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(save_dir)
             if (m := _ITER_DIR.match(name)) and os.path.isdir(os.path.join(save_dir, name))]
    return [os.path.join(save_dir, name) for _, name in sorted(found)]


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def prune_checkpoints(save_dir: str, keep: int) -> List[str]:
    """Remove all but the newest ``keep`` iteration checkpoints (``keep <= 0`` keeps all)
    and the temporary folders that killed processes left; return the removed paths."""
    removed = []
    if os.path.isdir(save_dir):
        for name in os.listdir(save_dir):
            m = _TEMP_DIR.match(name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(os.path.join(save_dir, name), ignore_errors=True)
                removed.append(os.path.join(save_dir, name))
    if keep > 0:
        for folder in list_checkpoints(save_dir)[:-keep]:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _missing_folder_error(folder: str) -> CheckpointError:
    aside = glob.glob(glob.escape(folder.rstrip("/\\")) + ".old-*")
    hint = (f" A save was interrupted while replacing it: rename {aside[0]} back to "
            f"{folder} to use the previous copy." if aside else "")
    return CheckpointError(f"Cannot resume: {folder} is not a checkpoint folder (expected "
                           f"save_dir/iter_N with {MODEL_FILE} and {STATE_FILE}).{hint}")


def load_checkpoint(folder: str, model: paddle.nn.Layer, optimizer: Optional[Any] = None,
                    restore_rng: bool = True) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` and ``optimizer``.

    Returns ``{"train_state": TrainState, "config": dict or None, "ema": {key: array} or
    None}``. Every file is checked before anything is changed, so a bad checkpoint leaves
    the model, optimizer and random states as they were.
    """
    if not os.path.isdir(folder):
        raise _missing_folder_error(folder)
    paths = {name: os.path.join(folder, name) for name in
             (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, RNG_FILE, LEGACY_RNG_FILE, EMA_FILE)}
    needed = [MODEL_FILE, STATE_FILE] + ([OPTIMIZER_FILE] if optimizer is not None else [])
    missing = [paths[n] for n in needed if not os.path.isfile(paths[n])]
    if missing:
        raise CheckpointError(f"Cannot resume from {folder}: missing {', '.join(missing)}. "
                              f"The checkpoint is incomplete; resume from an older iter_N.")
    try:
        with open(paths[STATE_FILE], "r", encoding="utf-8") as f:
            payload = json.load(f)
        train_state = TrainState.from_json(payload["train_state"])
        saved_names = payload.get("parameter_names") or {}
        if not isinstance(saved_names, dict):
            raise ValueError("parameter_names must be a mapping")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"Cannot resume: {paths[STATE_FILE]} is corrupt "
                              f"({type(exc).__name__}: {exc}); resume from an older "
                              f"iter_N.") from None
    params = _load_arrays(paths[MODEL_FILE])
    ema = _load_arrays(paths[EMA_FILE]) if os.path.isfile(paths[EMA_FILE]) else None
    opt_state = None
    if optimizer is not None:
        opt_state = _read_pickle(paths[OPTIMIZER_FILE])
        if not isinstance(opt_state, dict):
            raise CheckpointError(f"Cannot resume: {paths[OPTIMIZER_FILE]} holds a "
                                  f"{type(opt_state).__name__}, not an optimizer state dict; "
                                  f"resume from an older iter_N.")
        opt_state.pop(BOOKKEEPING_KEY, None)  # paddle.save's; paddle.load drops it too
        opt_state = _rekey_optimizer_state(_as_tensors(opt_state), saved_names, model,
                                           paths[OPTIMIZER_FILE])
    rng = _read_rng(paths[RNG_FILE], paths[LEGACY_RNG_FILE]) if restore_rng else None
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
    return {"train_state": train_state, "config": payload.get("config"), "ema": ema}


def _load_arrays(path: str) -> Dict[str, np.ndarray]:
    try:
        return load_pdparams(path)
    except UnsafeWeightsError as exc:
        raise CheckpointError(f"Cannot resume: {exc}") from None
    except WeightsError as exc:
        # The weights loader's advice (re-download, pass another file) does not apply to
        # a checkpoint.
        reason = re.split(r"; re-download|\. Pass the", str(exc))[0]
        raise CheckpointError(f"Cannot resume: {reason}; resume from an older "
                              f"iter_N.") from None


def _read_pickle(path: str) -> Any:
    """``path`` through the allow-list unpickler, errors as CheckpointError."""
    try:
        return load_pickle(path)
    except UnsafePickleError as exc:
        raise CheckpointError(f"Cannot resume: {exc}") from None
    except SafePickleError as exc:  # its message starts with the path
        raise CheckpointError(f"Cannot resume: {exc}; resume from an older iter_N.") from None
    except OSError as exc:
        raise CheckpointError(f"Cannot resume: cannot read {path} ({exc.strerror or exc}); "
                              f"resume from an older iter_N.") from None


def _read_rng(json_path: str, legacy_path: str) -> Optional[Tuple[Any, Any, List[Any]]]:
    """The random states of ``rng.json``, else of an old ``rng.pkl``, else None."""
    if os.path.isfile(json_path):
        path = json_path
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"Cannot resume: {path} is unreadable "
                                  f"({type(exc).__name__}: {exc})") from None
    elif os.path.isfile(legacy_path):
        path = legacy_path
        data = _read_pickle(path)
    else:
        return None
    try:
        if path == legacy_path:
            data = _legacy_rng_as_json(data)
        return _parse_rng(data)
    except Exception as exc:  # wrong shapes/types/values raise many kinds
        raise CheckpointError(f"Cannot resume: {path} does not hold valid random states "
                              f"({type(exc).__name__}: {exc})") from None


def _as_tensors(state: Dict[str, Any]) -> Dict[str, Any]:
    """The arrays of an optimizer state (nested ones too) as tensors, as ``paddle.load``
    returns them (``set_state_dict`` needs tensors for AMP's master weights). paddle.save
    writes an array either bare or, in a state with nested dicts, as ``(name, array)``."""
    result: Dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            value = _as_tensors(value)
        elif isinstance(value, np.ndarray):
            value = paddle.to_tensor(value)
        elif (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
              and isinstance(value[1], np.ndarray)):
            name, value = value[0], paddle.to_tensor(value[1])
            value.name = name
        result[key] = value
    return result
