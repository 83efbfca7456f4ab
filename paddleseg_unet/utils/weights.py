"""Find, read, write and apply ``.pdparams`` weight files safely.

A ``.pdparams`` file is a pickled ``{key: numpy array}`` dict (what ``paddle.save`` writes
for a state dict), optionally with the bookkeeping key ``StructuredToParameterName@@``.
Pickle can run arbitrary code, and these files come from the internet, so ``load_pdparams``
reads them with the allow-list unpickler of ``utils.safe_pickle`` (no code is run).
"""
from __future__ import annotations

import difflib
import hashlib
import os
import pickle
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from paddleseg_unet.utils.io import atomic_write
from paddleseg_unet.utils.logger import logger
from paddleseg_unet.utils.safe_pickle import (NotAPickleError, SafePickleError, UnsafePickleError,
                                              load_pickle)

_ZOO_BASE = "https://bj.bcebos.com/paddleseg/dygraph"
_ZOO_RUNS = {  # zoo name -> dataset folder on the server
    "unet_cityscapes_1024x512_160k": "cityscapes",
    "unet_stare_128x128_40k": "stare",
    "unet_drive_128x128_40k": "drive",
    "unet_chasedb1_128x128_40k": "chasedb1",
    "unet_hrf_256x256_40k": "hrf",
}
MODEL_ZOO: Dict[str, str] = {
    name: f"{_ZOO_BASE}/{ds}/{name}/model.pdparams" for name, ds in _ZOO_RUNS.items()
}

# PaddleSeg's published scores of the zoo models (no test-time augmentation), for listings.
PUBLISHED_SCORES: Dict[str, str] = {
    "unet_cityscapes_1024x512_160k": "mIoU 65.00",
    "unet_stare_128x128_40k": "mIoU 83.54, AUC 95.93, mDice 90.43",
    "unet_drive_128x128_40k": "mIoU 82.12, AUC 95.58, mDice 89.50",
    "unet_chasedb1_128x128_40k": "mIoU 80.87, AUC 95.69, mDice 88.54",
    "unet_hrf_256x256_40k": "mIoU 78.45, AUC 93.39, mDice 86.83",
}

# paddle.save adds this key (structured name -> internal parameter name); never a weight.
BOOKKEEPING_KEY = "StructuredToParameterName@@"


class WeightsError(Exception):
    """A weights file that cannot be found, read, trusted or applied."""


class UnsafeWeightsError(WeightsError):
    """A weights pickle that references a global outside the allow-list (may be malicious)."""


# --------------------------------------------------------------------------- resolving

def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def resolve_weights(spec: str) -> str:
    """A local path for ``spec``: an existing file (or a directory holding
    ``model.pdparams``), an http(s) URL, or a ``MODEL_ZOO`` name; the last two are
    downloaded once into the cache. Download failures raise the download module's
    ``DownloadError``."""
    spec = os.fspath(spec)
    if os.path.isfile(spec):
        return spec
    if os.path.isdir(spec):
        inner = os.path.join(spec, "model.pdparams")
        if os.path.isfile(inner):
            return inner
        raise WeightsError(f"Weights directory {spec!r} holds no model.pdparams; "
                           "pass the .pdparams file itself")
    if _is_url(spec) or spec in MODEL_ZOO:
        # Imported lazily: only URLs and zoo names need the downloader.
        from paddleseg_unet.utils.download import cached_download

        zoo_name = spec if spec in MODEL_ZOO else _zoo_name_of_url(spec)
        if zoo_name is not None:
            # Every zoo file is called model.pdparams; name the cached copy by the run.
            return cached_download(MODEL_ZOO[zoo_name], filename=f"{zoo_name}.pdparams")
        return cached_download(spec, filename=_cache_name_of_url(spec))
    close = difflib.get_close_matches(spec, MODEL_ZOO, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise WeightsError(
        f"Weights {spec!r} not found: it is not an existing file, an http(s) URL or a "
        f"model-zoo name.{hint} Zoo names: {', '.join(MODEL_ZOO)}."
    )


def _zoo_name_of_url(url: str) -> Optional[str]:
    for name, zoo_url in MODEL_ZOO.items():
        if url == zoo_url:
            return name
    return None


def _cache_name_of_url(url: str) -> Optional[str]:
    """``<stem>-<url hash><ext>``: checkpoints are usually all called model.pdparams, so
    the basename alone would make different URLs share one cache entry."""
    base = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if base in ("", ".", ".."):
        return None  # let the downloader report the unusable URL
    stem, ext = os.path.splitext(base)
    return f"{stem}-{hashlib.sha1(url.encode('utf-8')).hexdigest()[:10]}{ext}"


# --------------------------------------------------------------------------- reading

def load_pdparams(path: str) -> Dict[str, np.ndarray]:
    """Read a ``.pdparams`` file into ``{key: array}`` without executing its contents
    (through the allow-list unpickler of ``utils.safe_pickle``).

    The bookkeeping key ``StructuredToParameterName@@`` is dropped. Anything but a dict of
    str -> numeric arrays raises ``WeightsError`` (``UnsafeWeightsError`` for foreign globals).
    """
    path = os.fspath(path)
    try:
        obj = load_pickle(path)
    except UnsafePickleError as e:
        raise UnsafeWeightsError(str(e)) from None
    except NotAPickleError:
        raise WeightsError(f"{path} is not a Paddle weights file (.pdparams): it does not "
                           "start with a pickle header. Pass the .pdparams file that "
                           "paddle.save or tools/train.py wrote (save_dir/iter_N/"
                           "model.pdparams), a URL or a model-zoo name") from None
    except OSError as e:
        raise WeightsError(f"Cannot read weights file {path!r}: {e.strerror or e}") from None
    except SafePickleError as e:
        raise WeightsError(
            f"Weights file {e}; re-download it, or delete it so it is fetched again"
        ) from None
    return _validate_state(obj, path)


def _validate_state(obj: Any, path: str) -> Dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise WeightsError(f"Weights file {path!r} holds a {type(obj).__name__}, not a dict "
                           "of arrays; is it a .pdparams file (not .pdopt or a model)?")
    state: Dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if key == BOOKKEEPING_KEY:
            continue
        if not isinstance(key, str):
            raise WeightsError(f"Weights file {path!r} has a non-string key {key!r}")
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            kind = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
            raise WeightsError(f"Weights file {path!r}: key {key!r} holds a {kind}, "
                               "not a numeric array")
        state[key] = value
    return state


# --------------------------------------------------------------------------- saving

def _to_numpy(value: Any, key: str) -> np.ndarray:
    """A contiguous numpy copy of an array or tensor; floats become float32."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # paddle.Tensor / Parameter
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise WeightsError(f"key {key!r} holds a {array.dtype} array, not numbers")
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)  # what PaddleSeg checkpoints hold
    return np.ascontiguousarray(array)


def save_pdparams(state: Mapping[str, Any], path: str) -> None:
    """Write ``state`` (arrays or tensors) as a ``.pdparams`` that ``paddle.load`` and
    PaddleSeg read: a pickled dict of float32 numpy arrays. Atomic (temp file + rename)."""
    path = os.fspath(path)
    arrays: Dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key == BOOKKEEPING_KEY:
            continue
        try:
            arrays[str(key)] = _to_numpy(value, key)
        except WeightsError as e:
            raise WeightsError(f"Saving {path!r}: {e}") from None
    with atomic_write(path) as f:
        pickle.dump(arrays, f, protocol=4)


# --------------------------------------------------------------------------- applying

@dataclass
class LoadReport:
    """What ``load_state_dict`` did. ``total`` counts the model's state-dict keys."""

    source: str
    loaded: int
    total: int
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    # (key, shape in the file, shape in the model)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every model key was loaded with the right shape."""
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        text = f"Loaded {self.loaded}/{self.total} parameters from {self.source}"
        details = []
        if self.missing:
            details.append(f"{len(self.missing)} missing")
        if self.mismatched:
            details.append(f"{len(self.mismatched)} with mismatched shapes")
        if self.unexpected:
            details.append(f"{len(self.unexpected)} unexpected in the file")
        return text + (f" ({', '.join(details)})" if details else "")

    def problems(self, limit: int = 20) -> str:
        """Listing of the missing, mismatched and unexpected keys, ``limit`` of each kind."""
        groups = [
            [f"  missing: {k}" for k in self.missing],
            [f"  shape mismatch: {k}: file {list(f)} vs model {list(m)}"
             for k, f, m in self.mismatched],
            [f"  unexpected: {k}" for k in self.unexpected],
        ]
        lines: List[str] = []
        for group in groups:
            lines += group[:limit]
            if len(group) > limit:
                lines.append(f"  ... and {len(group) - limit} more")
        return "\n".join(lines)


def _alias_groups(model_state: Mapping[str, Any]) -> Dict[str, List[str]]:
    """key -> every key naming the same tensor (e.g. UNet's ``cls.*`` and ``conv.*``)."""
    by_tensor: Dict[int, List[str]] = {}
    for key, tensor in model_state.items():
        by_tensor.setdefault(id(tensor), []).append(key)
    return {key: by_tensor[id(tensor)] for key, tensor in model_state.items()}


def load_state_dict(model: Any, state: Mapping[str, Any], strict: bool = True,
                    source: str = "state dict") -> LoadReport:
    """Copy ``state`` into ``model`` (a ``paddle.nn.Layer``) and report what happened.

    Keys whose shape differs are skipped; a tensor registered under two names (UNet's
    head) counts as loaded when the file holds either name. ``strict=True`` raises
    ``WeightsError`` before changing anything if a key is missing or mismatched;
    unexpected keys are only reported. Even lenient loading refuses a file matching
    nothing, which means the wrong file or model.
    """
    model_state = model.state_dict()
    aliases = _alias_groups(model_state)
    report = LoadReport(source=source, loaded=0, total=len(model_state))
    report.unexpected = sorted(k for k in state if k not in model_state and k != BOOKKEEPING_KEY)
    assignments: Dict[int, Tuple[Any, np.ndarray]] = {}
    for key, tensor in model_state.items():
        model_shape = tuple(tensor.shape)
        present = [k for k in aliases[key] if k in state]
        if not present:
            report.missing.append(key)
            continue
        value = _to_numpy(state[present[0]], present[0])
        if value.shape != model_shape:
            report.mismatched.append((key, value.shape, model_shape))
            continue
        for other in present[1:]:
            if not np.array_equal(_to_numpy(state[other], other), value):
                raise WeightsError(f"{source}: keys {present[0]!r} and {other!r} name the same "
                                   "model tensor but hold different values")
        report.loaded += 1
        assignments[id(tensor)] = (tensor, value)
    if strict and not report.complete:
        raise WeightsError(f"{source} does not fit the model ({report.summary()}):\n"
                           f"{report.problems()}\nPass a matching file, or skip these keys with "
                           "tools/val.py --allow_partial (strict=False in Python).")
    if report.loaded == 0 and report.total > 0:
        raise WeightsError(f"{source}: none of the model's {report.total} keys were found "
                           "with a matching shape; wrong file or wrong model?\n"
                           f"{report.problems()}")
    import paddle  # deferred: reading and writing files works without initialising Paddle

    for tensor, value in assignments.values():
        # to_tensor casts to the model's dtype (float32, or float16 under AMP O2).
        tensor.set_value(paddle.to_tensor(value, dtype=tensor.dtype))
    if report.complete and not report.unexpected:
        logger.info(report.summary())
    else:
        logger.warning("%s\n%s", report.summary(), report.problems())
    return report


def load_weights(model: Any, spec: str, strict: bool = True) -> LoadReport:
    """Resolve ``spec`` (path, URL or zoo name), read it safely and apply it to ``model``."""
    path = resolve_weights(spec)
    label = path if path == spec else f"{path} ({spec})"
    return load_state_dict(model, load_pdparams(path), strict=strict, source=label)


__all__: List[str] = [
    "MODEL_ZOO", "BOOKKEEPING_KEY", "WeightsError", "UnsafeWeightsError", "LoadReport",
    "resolve_weights", "load_pdparams", "save_pdparams", "load_state_dict", "load_weights",
]
