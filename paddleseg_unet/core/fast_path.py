"""``--backend auto``: eager weights run at exported-model speed without an export step.

On a CPU, Paddle's eager forward is slower than the same network exported (ONNX Runtime
~3x, Paddle Inference ~1.7x, with the eager convolutions on oneDNN; docs/export.md). So the
eager model with its weights is exported once (logits out, dynamic input size, the config's
preprocessing) into a cache keyed by the weights' content, the config's model section, the
output op and the Paddle / package versions; the export is checked against the eager model
on a probe input when it is made, and later runs use it. The fastest available backend
runs it: ONNX Runtime when onnxruntime (and paddle2onnx) are installed, else Paddle
Inference.

Eager Paddle runs instead, with one log line saying why, on a GPU (the eager path is fast
there), when the export or its check fails, or with ``--backend paddle``.

The cache folder is built under a temporary name and renamed into place only once complete
and checked: a crash never leaves a half model that is later used, and two processes making
the same entry keep one of the two identical copies.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import paddle

from paddleseg_unet.core.backends import (Backend, BackendError, best_exported_kind,
                                          build_backend, verify_export)
from paddleseg_unet.core.export import DEPLOY_FILE, ExportError, export_model
from paddleseg_unet.utils.download import cache_root

__all__ = ["CHECK_TOLERANCE", "export_cache_key", "cached_export", "fast_model"]

CHECK_TOLERANCE = 1e-4  # max |logit difference| between the export and the eager model
OUTPUT_OP = "none"  # logits: every metric (AUC included) and every averaging stays exact


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_cache_key(weights_path: str, model_section: Dict[str, Any], onnx: bool) -> str:
    """What identifies an export: the weights' bytes, the model section, the output op, ONNX
    or not, and the versions that write the files."""
    import paddleseg_unet

    parts = {"weights": _file_digest(weights_path), "output_op": OUTPUT_OP, "onnx": onnx,
             "model": {k: v for k, v in model_section.items() if k != "pretrained"},
             "paddle": paddle.__version__, "package": paddleseg_unet.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "paddle2onnx"))


def cached_export(model: paddle.nn.Layer, weights_path: str, model_section: Dict[str, Any], *,
                  num_classes: int, transforms: Sequence[Dict[str, Any]],
                  class_names: Sequence[str], color_map: Optional[np.ndarray] = None,
                  onnx: Optional[bool] = None, cache_dir: Optional[str] = None) -> str:
    """The exported folder of ``model`` (its weights from ``weights_path``): from the cache,
    or exported, checked against ``model`` and put into the cache now."""
    onnx = _onnx_available() if onnx is None else onnx
    cache_dir = cache_dir or os.path.join(cache_root(), "exported")
    final = os.path.join(cache_dir, export_cache_key(weights_path, model_section, onnx))
    if os.path.isfile(os.path.join(final, DEPLOY_FILE)):  # complete: renamed in when checked
        return final
    os.makedirs(cache_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=cache_dir)
    try:
        export_model(model, work, num_classes=num_classes, transforms=list(transforms),
                     class_names=list(class_names), color_map=color_map,
                     output_op=OUTPUT_OP, onnx=onnx)
        diffs = verify_export(model, work)
        bad = {k: d for k, d in diffs.items() if not d <= CHECK_TOLERANCE}
        if bad:
            raise ExportError(f"the exported model differs from the eager one on a probe input "
                              f"(max |difference| {bad}, tolerance {CHECK_TOLERANCE})")
        try:
            os.rename(work, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, DEPLOY_FILE)):
                raise
            # Another process put the same (equally checked) export in first: keep that one.
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def fast_model(model: paddle.nn.Layer, weights_path: Optional[str],
               model_section: Dict[str, Any], info: Any,
               num_threads: Optional[int] = None) -> Tuple[Any, str]:
    """``(what to run, why)``: an exported-model backend of ``model`` when that is faster
    and possible, else ``model`` itself. ``info``: the config's deploy info (transforms,
    classes, colours)."""
    if paddle.get_device().startswith("gpu"):
        return model, "eager Paddle (on a GPU the eager forward is fast)"
    if weights_path is None or not os.path.isfile(weights_path):
        return model, "eager Paddle (no weights file to key an export by)"
    try:
        folder = cached_export(model, weights_path, model_section,
                               num_classes=info.num_classes, transforms=info.transforms,
                               class_names=info.class_names, color_map=info.color_map)
        kind = best_exported_kind(folder)
        backend: Backend = build_backend(kind, folder, num_threads)
    except (ExportError, BackendError, OSError, RuntimeError, ValueError) as exc:
        return model, f"eager Paddle (the export is not possible here: {exc})"
    return backend, (f"{'ONNX Runtime' if kind == 'onnxruntime' else 'Paddle Inference'} on "
                     f"the exported model {folder} (checked against the eager model; "
                     f"--backend paddle runs eager)")
