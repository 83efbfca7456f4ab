"""Run a model through one of three backends behind one forward callable.

- ``paddle``: Paddle eager (dynamic graph) on a ``paddle.nn.Layer``, or on an exported
  folder loaded with ``paddle.jit.load``;
- ``inference``: the Paddle Inference predictor on an exported folder;
- ``onnxruntime``: ONNX Runtime on the folder's ``model.onnx`` (CPU).

A backend is called like a model: ``backend(x) -> logits [N, K, H, W]`` (paddle tensor),
with ``x`` an image batch ``[N, C, H, W]`` (paddle tensor or numpy). It therefore plugs into
:func:`paddleseg_unet.core.infer.aug_inference` (sliding window, flips, scales) and
:func:`paddleseg_unet.core.evaluate.evaluate` unchanged.

Exported folders hold ``deploy.yaml`` (see :mod:`paddleseg_unet.core.export`); the
preprocessing, class count and output op come from it. The output op decides what
"logits" are: ``none`` gives the model's logits; ``softmax`` gives ``log(p)``, whose softmax
is ``p`` again, so probabilities and AUC are exact; ``argmax`` gives a one-hot map, so the
class ids are exact but probabilities are 0/1 and flip/scale averaging becomes voting.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import paddle
import paddle.nn.functional as F
import yaml

from paddleseg_unet.core.export import DEPLOY_FILE, OUTPUT_OPS
from paddleseg_unet.cvlibs.registry import BACKENDS
from paddleseg_unet.utils.device import cpu_threads
from paddleseg_unet.utils.logger import logger

__all__ = ["BACKENDS", "BackendError", "DeployInfo", "load_deploy", "Backend",
           "PaddleBackend", "InferenceBackend", "OnnxRuntimeBackend", "build_backend",
           "outputs_to_logits", "verify_export", "add_backend_args", "backend_from_args",
           "best_exported_kind"]

_LOG_FLOOR = 1e-30  # log(0) guard when turning softmax outputs back into logits


class BackendError(RuntimeError):
    """A backend that cannot be built or run (missing package, bad model folder...)."""


@dataclass
class DeployInfo:
    """The contents of an exported folder's ``deploy.yaml``."""

    model_dir: str
    model_file: str
    params_file: str
    onnx_file: Optional[str]
    transforms: List[Dict[str, Any]]
    output_op: str
    num_classes: int
    input_shape: List[int] = field(default_factory=lambda: [-1, 3, -1, -1])
    input_name: str = "x"
    class_names: List[str] = field(default_factory=list)
    color_map: Optional[np.ndarray] = None

    def build_transforms(self) -> Callable:
        """The preprocessing pipeline (a Compose) the model was exported with."""
        from paddleseg_unet.transforms import Compose

        return Compose(list(self.transforms))


def _deploy_error(path: str, problem: str) -> BackendError:
    return BackendError(f"{path}: {problem}. Re-export the model with tools/export.py.")


def load_deploy(model_dir: str) -> DeployInfo:
    """Read ``model_dir/deploy.yaml`` (``model_dir`` may also be the yaml file itself)."""
    path = model_dir if os.path.isfile(model_dir) else os.path.join(model_dir, DEPLOY_FILE)
    if not os.path.isfile(path):
        raise BackendError(f"no {DEPLOY_FILE} in {model_dir}: --model_dir must be a folder "
                           f"written by tools/export.py")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise BackendError(f"cannot read {path}: {e}") from None
    deploy = data.get("Deploy") if isinstance(data, dict) else None
    if not isinstance(deploy, dict):
        raise _deploy_error(path, "missing the top-level 'Deploy' mapping")
    folder = os.path.dirname(os.path.abspath(path))
    for key in ("model", "params", "output_op", "num_classes"):
        if key not in deploy:
            raise _deploy_error(path, f"missing Deploy.{key}")
    if deploy["output_op"] not in OUTPUT_OPS:
        raise _deploy_error(path, f"Deploy.output_op must be one of {', '.join(OUTPUT_OPS)}, "
                                  f"got {deploy['output_op']!r}")
    transforms = deploy.get("transforms") or []
    if not isinstance(transforms, list) or not all(
            isinstance(t, dict) and "type" in t for t in transforms):
        raise _deploy_error(path, "Deploy.transforms must be a list of {type: ...} mappings")
    color_map = deploy.get("color_map")
    return DeployInfo(
        model_dir=folder,
        model_file=os.path.join(folder, deploy["model"]),
        params_file=os.path.join(folder, deploy["params"]),
        onnx_file=os.path.join(folder, deploy["onnx"]) if deploy.get("onnx") else None,
        transforms=transforms, output_op=deploy["output_op"],
        num_classes=int(deploy["num_classes"]),
        input_shape=list(deploy.get("input_shape") or [-1, 3, -1, -1]),
        input_name=str(deploy.get("input_name") or "x"),
        class_names=list(deploy.get("class_names") or []),
        color_map=None if color_map is None else np.asarray(color_map, dtype=np.uint8))


def outputs_to_logits(out: Union[np.ndarray, paddle.Tensor], output_op: str,
                      num_classes: int) -> paddle.Tensor:
    """Turn an exported model's output into ``[N, K, H, W]`` float32 scores whose softmax
    and argmax are the model's (see the module docstring)."""
    if isinstance(out, np.ndarray):
        out = paddle.to_tensor(out)
    if output_op == "argmax":
        if out.ndim == 4:  # [N, 1, H, W] from some exporters
            out = out.squeeze(1)
        onehot = F.one_hot(out.astype("int64"), num_classes)  # [N, H, W, K]
        return onehot.transpose([0, 3, 1, 2]).astype("float32")
    out = out.astype("float32")
    if output_op == "softmax":
        return paddle.log(paddle.clip(out, min=_LOG_FLOOR))
    return out


class Backend:
    """``backend(x) -> logits``; subclasses implement :meth:`run` (numpy or tensor out).

    A backend registers in ``BACKENDS`` under its ``--backend`` name and is built as
    ``cls(source, num_threads)``: ``source`` an exported folder (deploy.yaml), or a paddle
    model for a backend with ``takes_layer``."""

    kind = ""
    takes_layer = False

    def __init__(self, output_op: str = "none", num_classes: Optional[int] = None,
                 deploy: Optional[DeployInfo] = None) -> None:
        self.output_op = output_op
        self.num_classes = num_classes
        self.deploy = deploy

    def run(self, x: Any) -> Any:
        raise NotImplementedError

    @paddle.no_grad()
    def __call__(self, x: Any) -> paddle.Tensor:
        out = self.run(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if self.output_op == "argmax" and not self.num_classes:
            raise BackendError("an argmax-output model needs num_classes (from deploy.yaml)")
        return outputs_to_logits(out, self.output_op, self.num_classes or 0)

    def transforms(self) -> Optional[Callable]:
        """The exported preprocessing, or None for a plain paddle model."""
        return self.deploy.build_transforms() if self.deploy is not None else None

    def __repr__(self) -> str:
        where = self.deploy.model_dir if self.deploy is not None else "in-memory model"
        return f"{type(self).__name__}({where}, output_op={self.output_op!r})"


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, paddle.Tensor):
        x = x.numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


@BACKENDS.register("paddle")
class PaddleBackend(Backend):
    """Paddle eager: a Layer (logits out) or an exported folder via ``paddle.jit.load``."""

    kind = "paddle"
    takes_layer = True

    def __init__(self, source: Union[paddle.nn.Layer, str],
                 num_threads: Optional[int] = None) -> None:
        if isinstance(source, paddle.nn.Layer):
            super().__init__("none", getattr(source, "num_classes", None))
            self.model = source
        else:
            deploy = load_deploy(source)
            super().__init__(deploy.output_op, deploy.num_classes, deploy)
            prefix = os.path.splitext(deploy.model_file)[0]
            try:
                self.model = paddle.jit.load(prefix)
            except Exception as e:  # paddle raises many kinds for unreadable programs
                raise BackendError(f"paddle.jit.load cannot load {prefix}: {e}") from e
        self.model.eval()

    def run(self, x: Any) -> Any:
        if not isinstance(x, paddle.Tensor):
            x = paddle.to_tensor(_as_numpy(x))
        return self.model(x)


@BACKENDS.register("inference")
class InferenceBackend(Backend):
    """The Paddle Inference predictor (CPU with oneDNN, or the current GPU)."""

    kind = "inference"

    def __init__(self, model_dir: str, num_threads: Optional[int] = None) -> None:
        deploy = load_deploy(model_dir)
        super().__init__(deploy.output_op, deploy.num_classes, deploy)
        from paddle import inference

        for path in (deploy.model_file, deploy.params_file):
            if not os.path.isfile(path):
                raise BackendError(f"{path} is missing; the export in {deploy.model_dir} "
                                   f"is incomplete")
        config = inference.Config(deploy.model_file, deploy.params_file)
        config.disable_glog_info()
        if paddle.get_device().startswith("gpu"):
            config.enable_use_gpu(256, int(paddle.get_device().split(":")[-1] or 0))
        else:
            config.disable_gpu()
            self.threads = cpu_threads(num_threads)
            config.set_cpu_math_library_num_threads(self.threads)
            config.enable_mkldnn()
            # Paddle 3.3: the pass placing ops on oneDNN kernels moves bilinear_interp
            # there too, whose 'scale' attribute the oneDNN executor cannot convert
            # (Unimplemented: ConvertPirAttribute2RuntimeAttribute). Without the pass the
            # fusions still run; measured about 5x faster than without oneDNN at all.
            config.delete_pass("onednn_placement_pass")
        try:
            self.predictor = inference.create_predictor(config)
        except Exception as e:  # Paddle's C++ errors surface as several exception types
            raise BackendError(f"Paddle Inference cannot load {deploy.model_file}: {e}") from e
        self.input_name = self.predictor.get_input_names()[0]
        self.output_name = self.predictor.get_output_names()[0]

    def run(self, x: Any) -> np.ndarray:
        x = _as_numpy(x)
        handle = self.predictor.get_input_handle(self.input_name)
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        self.predictor.run()
        return self.predictor.get_output_handle(self.output_name).copy_to_cpu()


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime (CPU execution provider), ``num_threads`` intra-op threads."""

    kind = "onnxruntime"

    def __init__(self, model_dir: str, num_threads: Optional[int] = None) -> None:
        deploy = load_deploy(model_dir)
        super().__init__(deploy.output_op, deploy.num_classes, deploy)
        if deploy.onnx_file is None or not os.path.isfile(deploy.onnx_file):
            raise BackendError(f"{deploy.model_dir} has no ONNX model; export with "
                               f"tools/export.py --onnx")
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("the onnxruntime backend needs onnxruntime: pip install "
                               "onnxruntime (or pip install -e .[onnx])") from None
        options = ort.SessionOptions()
        self.threads = cpu_threads(num_threads)
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # paddle2onnx leaves unused initializers: no warnings
        try:
            self.session = ort.InferenceSession(deploy.onnx_file, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception classes are not importable
            raise BackendError(f"ONNX Runtime cannot load {deploy.onnx_file}: {e}") from e
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: Any) -> np.ndarray:
        return self.session.run(None, {self.input_name: _as_numpy(x)})[0]


def build_backend(kind: str, source: Union[paddle.nn.Layer, str],
                  num_threads: Optional[int] = None) -> Backend:
    """A backend registered as ``kind`` in ``BACKENDS`` for ``source``: a paddle model
    (``paddle`` only) or an exported folder. CPU backends use ``num_threads`` threads
    (default: ``OMP_NUM_THREADS``, else every core)."""
    if kind not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS.names())}, "
                           f"got {kind!r}")
    cls = BACKENDS.get(kind)
    if isinstance(source, paddle.nn.Layer) and not cls.takes_layer:
        raise BackendError(f"the {kind} backend runs an exported model: export it with "
                           f"tools/export.py{' --onnx' if kind == 'onnxruntime' else ''} "
                           f"and pass the folder (--model_dir)")
    return cls(source, num_threads)


def verify_export(model: paddle.nn.Layer, model_dir: str, kinds: Optional[List[str]] = None,
                  input_hw: Optional[tuple] = None, seed: int = 0) -> Dict[str, float]:
    """Max absolute difference between the eager ``model`` and each exported format on one
    random input, in the export's output space (logits, probabilities or class ids).

    ``kinds`` default: ``inference``, plus ``onnxruntime`` when the folder has an ONNX
    model. ``input_hw`` default: the exported static size, else 64 x 64.
    """
    from paddleseg_unet.core.export import ExportHead

    deploy = load_deploy(model_dir)
    if kinds is None:
        kinds = ["inference"] + (["onnxruntime"] if deploy.onnx_file else [])
    n, c, h, w = deploy.input_shape
    if input_hw is None:
        input_hw = (h if h > 0 else 64, w if w > 0 else 64)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n if n > 0 else 1, c, *input_hw)).astype(np.float32)
    head = ExportHead(model, deploy.output_op)
    head.eval()
    with paddle.no_grad():
        expected = head(paddle.to_tensor(x)).numpy().astype(np.float64)
    diffs = {}
    for kind in kinds:
        got = build_backend(kind, model_dir).run(x)
        got = got.numpy() if isinstance(got, paddle.Tensor) else np.asarray(got)
        if got.shape != expected.shape:
            raise BackendError(f"the {kind} backend returns shape {list(got.shape)}, the eager "
                               f"model {list(expected.shape)}")
        diffs[kind] = float(np.abs(got.astype(np.float64) - expected).max())
    return diffs


def add_backend_args(parser: Any) -> None:
    """``--backend`` and ``--model_dir`` for tools that can run an exported model."""
    group = parser.add_argument_group("backend")
    group.add_argument("--backend", choices=["auto"] + BACKENDS.names(), default="auto",
                       help="auto (default): on a CPU, eager weights are exported once (a "
                            "cache, checked against the eager model) and run by ONNX Runtime "
                            "or Paddle Inference; eager on a GPU. paddle: eager Paddle. "
                            "inference / onnxruntime: that runtime on --model_dir")
    group.add_argument("--model_dir", default=None,
                       help="a folder written by tools/export.py (deploy.yaml + model); its "
                            "deploy.yaml sets the preprocessing")


def best_exported_kind(model_dir: str) -> str:
    """ONNX Runtime when the folder has an ONNX model and onnxruntime is installed, else
    Paddle Inference: the faster one on a CPU (docs/export.md)."""
    import importlib.util

    has_onnx = os.path.isfile(os.path.join(model_dir, "model.onnx"))
    return ("onnxruntime" if has_onnx and importlib.util.find_spec("onnxruntime") is not None
            else "inference")


def backend_from_args(args: Any) -> Optional[Backend]:
    """The exported-model backend the flags ask for (``--model_dir``), or None for the
    config's model (eager, or ``--backend auto``'s export of it).

    ``--num_threads`` sets the CPU threads of the backend."""
    if args.model_dir is None:
        if args.backend not in ("paddle", "auto"):
            raise BackendError(f"--backend {args.backend} runs an exported model: give "
                               f"--model_dir (a folder written by tools/export.py"
                               f"{' --onnx' if args.backend == 'onnxruntime' else ''})")
        return None
    if getattr(args, "model_path", None):
        logger.warning(f"--model_path {args.model_path} is ignored: the weights come from "
                       f"the exported model in {args.model_dir}")
    kind = best_exported_kind(args.model_dir) if args.backend == "auto" else args.backend
    return build_backend(kind, args.model_dir, getattr(args, "num_threads", None))
