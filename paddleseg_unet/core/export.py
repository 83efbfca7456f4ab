"""Export a trained model for deployment without the training code.

``export_model`` writes into ``save_dir``:

- ``model.json`` + ``model.pdiparams``: a Paddle static inference program (``paddle.jit.save``;
  Paddle 3 writes its PIR program as JSON, older Paddle a ``model.pdmodel``), input
  ``x`` of shape ``[N, C, H, W]`` float32, dynamic N, H and W unless ``input_shape`` fixes them;
- ``model.onnx`` (``onnx=True``): the same program converted by paddle2onnx;
- ``deploy.yaml``, written last: what a deployment needs besides the network::

    Deploy:
      model: model.json           # files, relative to the folder
      params: model.pdiparams
      onnx: model.onnx            # only when exported
      input_name: x
      input_shape: [-1, 3, -1, -1]  # -1 = any size
      transforms:                 # the val pipeline, every argument spelled out
        - {type: Normalize, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
      output_op: argmax           # argmax | softmax | none
      output_dtype: int32         # argmax: class ids [N, H, W]; else float32 [N, K, H, W]
      num_classes: 2
      class_names: [background, vessel]
      color_map: [[0, 0, 0], [0, 255, 0]]

The input is the image after these transforms (RGB, CHW, float32).
"""
from __future__ import annotations

import inspect
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
import yaml

from paddleseg_unet.utils.logger import logger
from paddleseg_unet.utils.io import atomic_write_bytes

__all__ = ["ExportError", "OUTPUT_OPS", "DEPLOY_FILE", "ExportHead", "deploy_transforms",
           "export_model", "export_onnx", "parse_input_shape"]

OUTPUT_OPS = ("argmax", "softmax", "none")
DEPLOY_FILE = "deploy.yaml"
MODEL_PREFIX = "model"
INPUT_NAME = "x"
DEFAULT_OPSET = 11


class ExportError(RuntimeError):
    """Export failed or was asked for something it cannot do; the message says why."""


class ExportHead(paddle.nn.Layer):
    """The model's first output followed by the deploy output op.

    ``argmax``: int32 class ids ``[N, H, W]``; ``softmax``: probabilities; ``none``: logits
    (both ``[N, K, H, W]`` float32).
    """

    def __init__(self, model: paddle.nn.Layer, output_op: str = "argmax") -> None:
        super().__init__()
        if output_op not in OUTPUT_OPS:
            raise ExportError(f"output_op must be one of {', '.join(OUTPUT_OPS)}, "
                              f"got {output_op!r}")
        self.model = model
        self.output_op = output_op

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if self.output_op == "argmax":
            return paddle.argmax(out, axis=1, dtype="int32")
        if self.output_op == "softmax":
            return F.softmax(out, axis=1)
        return out


def parse_input_shape(input_shape: Optional[Sequence[Any]], in_channels: int = 3) -> List[int]:
    """``[N, C, H, W]`` with -1 for dynamic sizes. None -> ``[-1, in_channels, -1, -1]``;
    ``None``/``-1``/``0`` entries mean dynamic; two values are taken as ``H W``."""
    if input_shape is None:
        return [-1, in_channels, -1, -1]
    values = list(input_shape)
    if len(values) == 2:
        values = [-1, in_channels] + values
    if len(values) != 4:
        raise ExportError(f"--input_shape takes N C H W (or H W), e.g. 1 3 512 1024; got "
                          f"{input_shape!r}")
    shape = []
    for v in values:
        try:
            v = -1 if v is None else int(v)
        except (TypeError, ValueError):
            raise ExportError(f"--input_shape entries must be integers (-1 = dynamic), got "
                              f"{input_shape!r}") from None
        shape.append(-1 if v <= 0 else v)
    if shape[1] != in_channels:
        raise ExportError(f"--input_shape has {shape[1]} channels but the model takes "
                          f"{in_channels}")
    return shape


def deploy_transforms(specs: Optional[Sequence[Any]]) -> List[Dict[str, Any]]:
    """The transform specs with every constructor argument written out (defaults filled in),
    so ``deploy.yaml`` states the exact preprocessing. Only spec dicts can be exported."""
    from paddleseg_unet.cvlibs.registry import TRANSFORMS
    import paddleseg_unet.transforms  # noqa: F401  (fills TRANSFORMS)

    result = []
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ExportError(f"transforms[{i}] must be a spec dict with a 'type' to be written "
                              f"to {DEPLOY_FILE}, got {spec!r}")
        cls = TRANSFORMS.get(spec["type"], where=f"transforms[{i}]")
        full = {"type": spec["type"]}
        for name, param in inspect.signature(cls).parameters.items():
            if name in spec:
                full[name] = spec[name]
            elif param.default is not inspect.Parameter.empty:
                full[name] = param.default
        unknown = [k for k in spec if k not in full]
        if unknown:
            raise ExportError(f"transforms[{i}] ({spec['type']}) has unknown arguments "
                              f"{unknown}")
        result.append(_plain(full))
    return result


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def export_onnx(model_file: str, params_file: str, onnx_path: str,
                opset_version: int = DEFAULT_OPSET) -> str:
    """Convert a Paddle static model to ONNX with paddle2onnx; returns ``onnx_path``."""
    try:
        import paddle2onnx
    except ImportError:
        raise ExportError("ONNX export needs paddle2onnx: pip install paddle2onnx onnxruntime "
                          "(or pip install -e .[onnx])") from None
    directory = os.path.dirname(os.path.abspath(onnx_path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(onnx_path)}")
    try:
        # No post-conversion pass (paddle2onnx's own graph optimizer, enable_optimize, still
        # runs; ONNX Runtime optimizes the graph again when it loads it). Its "polygraphy"
        # default pip-installs onnx_graphsurgeon from a non-PyPI index at export time, and
        # its "onnxoptimizer" pass list names a pass that does not exist
        # ("eliminate_nop_cast ", paddle2onnx 2.1), so it always fails and logs "Skip
        # onnxoptimizer".
        paddle2onnx.export(model_file, params_file, tmp, opset_version=opset_version,
                           auto_upgrade_opset=True, enable_onnx_checker=True,
                           enable_optimize=True, optimize_tool="none")
        # paddle2onnx logs conversion errors instead of raising them.
        if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            raise ExportError(f"paddle2onnx did not produce {onnx_path}; see its log above "
                              f"(an operator without an ONNX conversion at opset "
                              f"{opset_version}? try --opset_version 13)")
        os.replace(tmp, onnx_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return onnx_path


def _save_static(head: ExportHead, prefix: str, shape: List[int]) -> None:
    spec = [paddle.static.InputSpec([None if s < 0 else s for s in shape], "float32",
                                    INPUT_NAME)]
    try:
        paddle.jit.save(head, prefix, input_spec=spec)
    except Exception as e:  # dy2static raises many kinds; all mean "cannot trace"
        raise ExportError(f"paddle.jit.save could not convert the model to a static graph: "
                          f"{_trace_error_summary(e)}. The forward may only branch on values "
                          f"known while tracing (with dynamic H and W, sizes are graph "
                          f"values, not ints); PADDLESEG_UNET_DEBUG=1 shows the full "
                          f"traceback") from e


def _trace_error_summary(error: Exception) -> str:
    """The innermost source line and the first error line of a dy2static failure
    (Paddle's message is pages long)."""
    text = str(error)
    paddle_dir = os.path.dirname(paddle.__file__)
    places = [p for p in re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
              if not p[0].startswith(paddle_dir)]
    cause = re.search(r"^\s*(\w+(?:Error|Exception): .+)$", text, re.M)
    summary = cause.group(1).strip() if cause else f"{type(error).__name__}: " + (
        text.strip().splitlines() or [""])[0]
    if places:
        path, line, func = places[-1]
        summary += f" (at {path}:{line}, in {func})"
    return summary


def export_model(model: paddle.nn.Layer, save_dir: str, *, num_classes: int,
                 transforms: Optional[Sequence[Dict[str, Any]]] = None,
                 class_names: Optional[Sequence[str]] = None,
                 color_map: Optional[np.ndarray] = None,
                 input_shape: Optional[Sequence[Any]] = None, output_op: str = "argmax",
                 onnx: bool = False, opset_version: int = DEFAULT_OPSET) -> Dict[str, str]:
    """Write the static model, optionally ONNX, and ``deploy.yaml`` into ``save_dir``.

    ``transforms``: the val transform specs (default: ``[Normalize]``). Returns the paths
    written: ``{'model', 'params', 'onnx' (if asked), 'deploy'}``. Files are built in a
    temporary folder and moved in, ``deploy.yaml`` last, so a half-finished export never
    looks complete.
    """
    if output_op not in OUTPUT_OPS:
        raise ExportError(f"output_op must be one of {', '.join(OUTPUT_OPS)}, got {output_op!r}")
    in_channels = int(getattr(model, "in_channels", 3))
    shape = parse_input_shape(input_shape, in_channels)
    specs = deploy_transforms(transforms if transforms is not None else [{"type": "Normalize"}])
    names = list(class_names) if class_names is not None else [
        f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ExportError(f"{len(names)} class names for {num_classes} classes")
    model.eval()
    head = ExportHead(model, output_op)
    head.eval()
    os.makedirs(save_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".export-", dir=save_dir)
    try:
        _save_static(head, os.path.join(work, MODEL_PREFIX), shape)
        model_name = next((MODEL_PREFIX + ext for ext in (".json", ".pdmodel")
                           if os.path.isfile(os.path.join(work, MODEL_PREFIX + ext))), None)
        if model_name is None:
            raise ExportError(f"paddle.jit.save wrote no {MODEL_PREFIX}.json/.pdmodel "
                              f"(files: {sorted(os.listdir(work))})")
        params_name = MODEL_PREFIX + ".pdiparams"
        deploy: Dict[str, Any] = {"model": model_name, "params": params_name}
        if onnx:
            export_onnx(os.path.join(work, model_name), os.path.join(work, params_name),
                        os.path.join(work, MODEL_PREFIX + ".onnx"), opset_version)
            deploy["onnx"] = MODEL_PREFIX + ".onnx"
        deploy.update(
            input_name=INPUT_NAME, input_shape=shape, transforms=specs, output_op=output_op,
            output_dtype="int32" if output_op == "argmax" else "float32",
            num_classes=int(num_classes), class_names=names)
        if color_map is not None:
            deploy["color_map"] = np.asarray(color_map, dtype=np.uint8).tolist()
        paths: Dict[str, str] = {}
        for key in ("model", "params", "onnx"):
            if key in deploy:
                paths[key] = os.path.join(save_dir, deploy[key])
                os.replace(os.path.join(work, deploy[key]), paths[key])
        paths["deploy"] = os.path.join(save_dir, DEPLOY_FILE)
        text = yaml.safe_dump({"Deploy": _plain(deploy)}, sort_keys=False,
                              default_flow_style=None)
        atomic_write_bytes(paths["deploy"], text.encode("utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(f"Exported the model ({output_op} output, input {shape}) to {save_dir}: "
                f"{', '.join(os.path.basename(p) for p in paths.values())}")
    return paths
