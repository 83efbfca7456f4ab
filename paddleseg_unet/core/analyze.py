"""What a model costs at one input size: parameters, MACs and FLOPs per layer and in total,
an activation-memory estimate, and the measured latency of each inference backend.

``paddle.flops`` fails on Paddle 3.3.1 (``TypeError: only 0-dimensional arrays can be
converted to Python scalars`` while it sums the parameters), so the layers are counted here
with forward post-hooks during one forward pass at the requested size.

Conventions (a MAC is one multiply-add; bias additions are not counted anywhere):

==================  =============================================  ======================
layer               MACs                                           FLOPs
==================  =============================================  ======================
Conv (any dim)      out elements x Cin/groups x kernel elements    2 x MACs
Conv transpose      in elements x Cout/groups x kernel elements    2 x MACs
Linear              out elements x in_features                     2 x MACs
BatchNorm           out elements (inference: one scale-and-shift)  2 x MACs
activation          0                                              out elements
max / avg pooling   0                                              out elements x kernel
                                                                   elements (max: -1)
Upsample bilinear   4 x out elements (four weighted taps)          2 x MACs
Upsample nearest    0                                              0
other layers        0, reported as "not counted"                   0
==================  =============================================  ======================

Only layers are observable by hooks: functional calls inside a ``forward``
(``F.interpolate``, ``paddle.concat``, ``+``) are neither counted nor part of the activation
estimate. For the UNet these are the decoder's four bilinear resizes and concatenations.

The activation estimate is the sum of the sizes of the outputs of every layer call seen
(float32, the whole batch): roughly what a training forward keeps for the backward pass;
an inference forward frees most of them and needs far less at its peak. Weights and the
input are not included.
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn as nn

from paddleseg_unet.core.backends import BackendError, build_backend
from paddleseg_unet.core.export import ExportError, export_model
from paddleseg_unet.utils.device import cpu_threads
from paddleseg_unet.utils.io import atomic_write_bytes

__all__ = ["AnalyzeError", "LayerCost", "Latency", "ModelAnalysis", "analyze_model", "count_layers",
           "count_parameters", "format_analysis", "layer_macs_flops", "measure_latency", "write_analysis_json", "BACKEND_KINDS"]

BACKEND_KINDS = ("paddle", "inference", "onnxruntime")
FLOAT32_BYTES = 4
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.Sigmoid,
                nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Swish, nn.Silu, nn.Softmax)
_TRANSPOSED = (nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose)
_UPSAMPLE = (nn.Upsample, nn.UpsamplingBilinear2D, nn.UpsamplingNearest2D)


class AnalyzeError(ValueError):
    """The analysis cannot run as asked (bad input shape, unknown backend...)."""


@dataclass
class LayerCost:
    """One call of one layer during the counting forward."""

    name: str
    type: str
    output_shape: List[int]
    params: int
    macs: int
    flops: int
    counted: bool = True  # False: no rule for this layer type (MACs/FLOPs left at 0)


@dataclass
class Latency:
    """Wall-clock seconds of one forward (input already in host memory, output copied to
    host memory), ``runs`` timed runs after ``warmup`` untimed ones; or why it was not
    measured (``error``)."""

    median: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    runs: int = 0
    warmup: int = 0
    error: Optional[str] = None


@dataclass
class ModelAnalysis:
    input_shape: List[int]
    trainable_params: int
    total_params: int
    layers: List[LayerCost]
    latency: Dict[str, Latency] = field(default_factory=dict)
    num_threads: Optional[int] = None

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        return FLOAT32_BYTES * sum(int(np.prod(layer.output_shape)) for layer in self.layers)

    @property
    def not_counted(self) -> List[str]:
        return sorted({layer.type for layer in self.layers if not layer.counted})

    def to_dict(self) -> Dict[str, Any]:
        return {"input_shape": self.input_shape, "trainable_params": self.trainable_params,
                "total_params": self.total_params, "macs": self.macs, "flops": self.flops,
                "activation_bytes": self.activation_bytes,
                "activation_note": "sum of the float32 outputs of every layer call (whole "
                                   "batch); functional ops, weights and the input excluded",
                "not_counted": self.not_counted, "num_threads": self.num_threads,
                "layers": [asdict(layer) for layer in self.layers],
                "latency_seconds": {k: asdict(v) for k, v in self.latency.items()}}


def count_parameters(model: nn.Layer) -> Tuple[int, int]:
    """``(trainable, total)`` parameter counts; each shared parameter counted once. Total
    includes the non-trainable ones (BatchNorm's running mean and variance)."""
    params = model.parameters()
    total = sum(int(np.prod(p.shape)) for p in params)
    trainable = sum(int(np.prod(p.shape)) for p in params if not p.stop_gradient)
    return trainable, total


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod([int(s) for s in shape]))


def _kernel_elements(size: Any) -> int:
    return _numel(size) if isinstance(size, (list, tuple)) else int(size) ** 2


def layer_macs_flops(layer: nn.Layer, in_shape: Sequence[int],
                     out_shape: Sequence[int]) -> Optional[Tuple[int, int]]:
    """``(MACs, FLOPs)`` of one call by the module's conventions, None without a rule."""
    out = _numel(out_shape)
    if isinstance(layer, _TRANSPOSED):
        macs = _numel(in_shape) * (layer._out_channels // layer._groups) * _numel(
            layer._kernel_size)
        return macs, 2 * macs
    if isinstance(layer, nn.layer.conv._ConvNd):
        macs = out * (layer._in_channels // layer._groups) * _numel(layer._kernel_size)
        return macs, 2 * macs
    if isinstance(layer, nn.Linear):
        macs = out * int(layer.weight.shape[0])
        return macs, 2 * macs
    if isinstance(layer, nn.layer.norm._BatchNormBase):
        return out, 2 * out
    if isinstance(layer, _ACTIVATIONS):
        return 0, out
    if isinstance(layer, (nn.MaxPool1D, nn.MaxPool2D, nn.MaxPool3D)):
        return 0, out * (_kernel_elements(layer.ksize) - 1)
    if isinstance(layer, (nn.AvgPool1D, nn.AvgPool2D, nn.AvgPool3D)):
        return 0, out * _kernel_elements(layer.ksize)
    if isinstance(layer, _UPSAMPLE):
        mode = getattr(layer, "mode", "bilinear" if isinstance(
            layer, nn.UpsamplingBilinear2D) else "nearest")
        macs = 4 * out if mode in ("bilinear", "linear") else 0
        return macs, 2 * macs
    if isinstance(layer, (nn.Dropout, nn.Dropout2D, nn.Identity, nn.Flatten)):
        return 0, 0
    return None


def _first_tensor(value: Any) -> Optional[paddle.Tensor]:
    if isinstance(value, paddle.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    return None


def count_layers(model: nn.Layer, input_shape: Sequence[int]) -> List[LayerCost]:
    """One forward (eval mode, no gradients, random input of ``input_shape``) with a hook on
    every leaf layer; one row per layer call, in call order."""
    rows: List[LayerCost] = []
    handles = []
    calls: Dict[str, int] = {}

    def hook_for(name: str):
        def hook(layer: nn.Layer, inputs: Any, output: Any) -> None:
            out, inp = _first_tensor(output), _first_tensor(inputs)
            if out is None:
                return
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"
            in_shape = list(inp.shape) if inp is not None else []
            cost = layer_macs_flops(layer, in_shape, list(out.shape))
            own = sum(_numel(p.shape) for p in layer.parameters(include_sublayers=False))
            rows.append(LayerCost(label, type(layer).__name__, list(out.shape),
                                  own if calls[name] == 1 else 0,
                                  *(cost if cost is not None else (0, 0)),
                                  counted=cost is not None))
        return hook

    for name, layer in model.named_sublayers():
        if not layer.sublayers():
            handles.append(layer.register_forward_post_hook(hook_for(name)))
    was_training = model.training
    model.eval()
    try:
        x = paddle.to_tensor(np.random.default_rng(0).uniform(
            -1, 1, [int(s) for s in input_shape]).astype(np.float32))
        with paddle.no_grad():
            try:
                model(x)
            except ValueError as e:  # the model's own input checks
                raise AnalyzeError(f"the model rejects an input of shape "
                                   f"{[int(v) for v in input_shape]}: {e}") from e
    finally:
        for handle in handles:
            handle.remove()
        if was_training:
            model.train()
    return rows


def _host(out: Any) -> None:
    out = _first_tensor(out) if not isinstance(out, np.ndarray) else out
    if isinstance(out, paddle.Tensor):
        out.numpy()


def _time(run: Any, x: np.ndarray, warmup: int, repeats: int) -> Latency:
    for _ in range(warmup):
        _host(run(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _host(run(x))
        times.append(time.perf_counter() - start)
    return Latency(statistics.median(times), min(times), max(times), repeats, warmup)


def _check_timing(kinds: Sequence[str], warmup: int, repeats: int) -> None:
    unknown = [k for k in kinds if k not in BACKEND_KINDS]
    if unknown:
        raise AnalyzeError(f"unknown backend(s) {unknown}; choose from {list(BACKEND_KINDS)}")
    if repeats < 1 or warmup < 0:
        raise AnalyzeError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")


def measure_latency(model: nn.Layer, input_shape: Sequence[int], num_classes: int,
                    kinds: Sequence[str] = BACKEND_KINDS, warmup: int = 1, repeats: int = 5,
                    num_threads: Optional[int] = None) -> Dict[str, Latency]:
    """Median latency of ``model`` at ``input_shape`` through each backend of ``kinds``:
    eager Paddle on the model itself; Paddle Inference and ONNX Runtime on an export (logits
    output, input shape fixed) into a temporary folder, removed afterwards. A backend that
    cannot run here gets ``Latency(error=why)`` instead of a number."""
    _check_timing(kinds, warmup, repeats)
    x = np.random.default_rng(0).uniform(-1, 1, [int(s) for s in input_shape]).astype(
        np.float32)
    model.eval()
    results: Dict[str, Latency] = {}
    if "paddle" in kinds:
        results["paddle"] = _time(build_backend("paddle", model, num_threads).run, x,
                                  warmup, repeats)
    exported = [k for k in kinds if k != "paddle"]
    if not exported:
        return results
    missing = [m for m in ("paddle2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    onnx = "onnxruntime" in exported and not missing
    if "onnxruntime" in exported and missing:
        results["onnxruntime"] = Latency(error=f"needs {' and '.join(missing)}: "
                                               f"pip install -e .[onnx]")
    with tempfile.TemporaryDirectory(prefix="paddleseg_unet-analyze-") as folder:
        try:
            export_model(model, folder, num_classes=num_classes, input_shape=input_shape,
                         output_op="none", onnx=onnx)
        except ExportError as e:
            for kind in exported:
                results.setdefault(kind, Latency(error=f"export failed: {e}"))
            return results
        for kind in exported:
            if kind in results:
                continue
            try:
                backend = build_backend(kind, folder, num_threads)
            except BackendError as e:
                results[kind] = Latency(error=str(e))
                continue
            results[kind] = _time(backend.run, x, warmup, repeats)
    return results


def analyze_model(model: nn.Layer, input_shape: Sequence[int], num_classes: int,
                  backends: Sequence[str] = BACKEND_KINDS, warmup: int = 1, repeats: int = 5,
                  num_threads: Optional[int] = None) -> ModelAnalysis:
    """Parameters, per-layer costs and (unless ``backends`` is empty) latencies."""
    shape = [int(s) for s in input_shape]
    if len(shape) != 4 or min(shape) < 1:
        raise AnalyzeError(f"input_shape must be N C H W with positive sizes, got {input_shape}")
    if backends:
        _check_timing(backends, warmup, repeats)
    trainable, total = count_parameters(model)
    layers = count_layers(model, shape)
    latency = measure_latency(model, shape, num_classes, backends, warmup, repeats,
                              num_threads) if backends else {}
    return ModelAnalysis(shape, trainable, total, layers, latency,
                         cpu_threads(num_threads) if backends else None)


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3f} {prefix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def format_analysis(analysis: ModelAnalysis, per_layer: bool = True) -> str:
    """The readable report: per-layer table, totals, activation estimate, latencies."""
    lines = []
    if per_layer:
        rows = [("layer", "type", "output", "params", "MACs", "FLOPs")]
        rows += [(r.name, r.type + ("" if r.counted else " (not counted)"),
                  "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
                  f"{r.flops:,}") for r in analysis.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(row, widths))))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    n, c, h, w = analysis.input_shape
    lines += [
        f"Input: {n}x{c}x{h}x{w} (N C H W)",
        f"Parameters: {analysis.trainable_params:,} trainable, {analysis.total_params:,} "
        f"total (with the non-trainable ones: BatchNorm running statistics)",
        f"MACs: {analysis.macs:,} ({_si(analysis.macs)})   FLOPs: {analysis.flops:,} "
        f"({_si(analysis.flops)}; 2 per MAC, no bias adds)",
        f"Activations: {_si(analysis.activation_bytes, 'B')} ({analysis.activation_bytes:,} "
        f"bytes: float32 outputs of the {len(analysis.layers)} layer calls; functional ops "
        f"such as interpolate/concat, weights and the input not included)",
    ]
    if analysis.not_counted:
        lines.append(f"No FLOP rule (counted as 0): {', '.join(analysis.not_counted)}")
    if analysis.latency:
        threads = f", {analysis.num_threads} CPU threads" if analysis.num_threads else ""
        lines.append(f"Latency per forward at this size (median of timed runs{threads}):")
        for kind, lat in analysis.latency.items():
            if lat.error:
                lines.append(f"  {kind:<12} not measured: {lat.error}")
            else:
                lines.append(f"  {kind:<12} {lat.median * 1e3:10.2f} ms  (min "
                             f"{lat.min * 1e3:.2f}, max {lat.max * 1e3:.2f}; {lat.runs} runs "
                             f"after {lat.warmup} warm-up)")
    return "\n".join(lines)


def write_analysis_json(analysis: ModelAnalysis, path: str, **extra: Any) -> None:
    """``analysis.to_dict()`` (plus ``extra`` keys, e.g. the config path) as JSON, written
    atomically."""
    data = dict(extra, **analysis.to_dict())
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
