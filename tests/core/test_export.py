"""Export (static + ONNX + deploy.yaml) and the inference backends: outputs equal the eager
model's within 1e-4, evaluation metrics too (whole image, sliding window, flips), and
tools/export.py + tools/val.py --backend end to end. One tiny UNet, exported twice."""
import importlib.util
import json
import os

import cv2
import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from paddleseg_unet.apis.builder import SegBuilder
from paddleseg_unet.core.backends import (BackendError, build_backend, load_deploy,
                                          outputs_to_logits, verify_export)
from paddleseg_unet.cvlibs.config import Config
from paddleseg_unet.core.evaluate import EvalOptions, evaluate
from paddleseg_unet.core.infer import InferenceOptions
from paddleseg_unet.core.predict import PredictError, predict
from paddleseg_unet.core.export import (ExportError, deploy_transforms, export_model,
                                        parse_input_shape)
from paddleseg_unet.datasets import Dataset
from paddleseg_unet.models.unet import UNet
from paddleseg_unet.transforms import Compose
from paddleseg_unet.utils.weights import save_pdparams

pytest.importorskip("paddle2onnx", reason="pip install paddle2onnx onnxruntime (extra 'onnx')")
pytest.importorskip("onnxruntime", reason="pip install paddle2onnx onnxruntime (extra 'onnx')")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-4
KINDS = ("paddle", "inference", "onnxruntime")
METRICS = ("miou", "acc", "kappa", "mdice", "auc_roc")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny retina-layout dataset, a config, weights and the model they hold."""
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    rng = np.random.default_rng(0)
    lines = []
    for i, (h, w) in enumerate([(40, 48), (37, 45), (48, 40)]):
        os.makedirs(data / "images" / "val", exist_ok=True)
        os.makedirs(data / "annotations" / "val", exist_ok=True)
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        label = (rng.random((h, w)) < 0.3).astype(np.uint8)
        cv2.imwrite(str(data / "images" / "val" / f"x{i}.png"), img)
        cv2.imwrite(str(data / "annotations" / "val" / f"x{i}.png"), label)
        lines.append(f"images/val/x{i}.png annotations/val/x{i}.png")
    (data / "val_list.txt").write_text("\n".join(lines) + "\n")
    config = root / "tiny.yml"
    config.write_text(yaml.safe_dump({
        "model": {"type": "UNet", "num_classes": 2, "base_channels": 4},
        "val_dataset": {"type": "Dataset", "dataset_root": str(data), "num_classes": 2,
                        "val_path": "val_list.txt", "mode": "val",
                        "transforms": [{"type": "Normalize", "mean": [0.4, 0.5, 0.6],
                                        "std": [0.3, 0.5, 0.7]}]},
        "test_config": {"auc_roc": True}}))
    paddle.seed(11)
    model = UNet(num_classes=2, base_channels=4)
    # Non-trivial BatchNorm statistics, so export must carry them.
    for name, tensor in model.state_dict().items():
        if name.endswith("_mean"):
            tensor.set_value(paddle.uniform(tensor.shape, min=-0.2, max=0.2))
        elif name.endswith("_variance"):
            tensor.set_value(paddle.uniform(tensor.shape, min=0.5, max=1.5))
    model.eval()
    weights = root / "model.pdparams"
    save_pdparams(model.state_dict(), str(weights))
    return {"root": root, "data": data, "config": str(config), "weights": str(weights),
            "model": model}


@pytest.fixture(scope="module")
def logits_export(workspace):
    """tools/export.py --output_op none --onnx (also checks its own parity log)."""
    out = workspace["root"] / "exported_logits"
    _load_tool("export").main(["--config", workspace["config"], "--model_path",
                               workspace["weights"], "--save_dir", str(out), "--output_op",
                               "none", "--onnx", "--device", "cpu"])
    return str(out)


@pytest.fixture(scope="module")
def argmax_export(workspace):
    out = workspace["root"] / "exported_argmax"
    export_model(workspace["model"], str(out), num_classes=2, output_op="argmax", onnx=True,
                 transforms=[{"type": "Normalize"}], class_names=["background", "vessel"])
    return str(out)


def _eager(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x))[0].numpy()


def test_deploy_yaml_describes_preprocessing_and_outputs(logits_export, argmax_export):
    for name in ("model.json", "model.pdiparams", "model.onnx", "deploy.yaml"):
        assert os.path.isfile(os.path.join(logits_export, name)), name
    assert not [f for f in os.listdir(logits_export) if f.startswith(".")]
    with open(os.path.join(logits_export, "deploy.yaml")) as f:
        deploy = yaml.safe_load(f)["Deploy"]
    assert deploy["transforms"] == [{"type": "Normalize", "mean": [0.4, 0.5, 0.6],
                                     "std": [0.3, 0.5, 0.7]}]
    assert deploy["output_op"] == "none" and deploy["output_dtype"] == "float32"
    assert deploy["input_shape"] == [-1, 3, -1, -1]
    assert deploy["num_classes"] == 2 and deploy["class_names"] == ["class_0", "class_1"]
    info = load_deploy(argmax_export)
    assert info.output_op == "argmax" and info.class_names == ["background", "vessel"]
    assert info.transforms == [{"type": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}]


@pytest.mark.parametrize("kind", KINDS)
def test_exported_logits_equal_eager(workspace, logits_export, kind):
    x = np.random.default_rng(1).normal(size=(2, 3, 37, 53)).astype(np.float32)
    got = build_backend(kind, logits_export, num_threads=2)(paddle.to_tensor(x)).numpy()
    expected = _eager(workspace["model"], x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < TOL


def test_exported_argmax_equals_eager(workspace, argmax_export, tmp_path):
    x = np.random.default_rng(2).normal(size=(1, 3, 33, 40)).astype(np.float32)
    expected = _eager(workspace["model"], x).argmax(axis=1)
    for kind in KINDS:
        backend = build_backend(kind, argmax_export, num_threads=2)
        raw = backend.run(x)
        raw = raw.numpy() if isinstance(raw, paddle.Tensor) else raw
        assert raw.dtype == np.int32 and np.array_equal(raw, expected), kind
        onehot = backend(x).numpy()
        assert np.array_equal(onehot.argmax(axis=1), expected)
        assert set(np.unique(onehot)) <= {0.0, 1.0}
    assert verify_export(workspace["model"], argmax_export) == {"inference": 0.0,
                                                                "onnxruntime": 0.0}
    with pytest.raises(PredictError, match="argmax"):
        predict(build_backend("onnxruntime", argmax_export), Compose([]), [], str(tmp_path),
                save_prob=True, progress=False)


def test_predict_tool_uses_deploy_preprocessing(workspace, logits_export, tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, size=(36, 44, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "eye.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    _load_tool("predict").main(["--backend", "onnxruntime", "--model_dir", logits_export,
                                "--image_path", str(tmp_path / "eye.png"), "--save_dir",
                                str(out), "--save_prob", "--no_progress", "--num_threads", "2"])
    # The config's Normalize constants, applied by hand.
    x = (rgb / 255.0 - [0.4, 0.5, 0.6]) / [0.3, 0.5, 0.7]
    logits = _eager(workspace["model"], x.transpose(2, 0, 1)[None].astype(np.float32))[0]
    with Image.open(out / "pseudo_color_prediction" / "eye.png") as im:
        assert np.array_equal(np.array(im), logits.argmax(axis=0))
    prob = cv2.imread(str(out / "probability" / "eye.png"), cv2.IMREAD_UNCHANGED) / 65535.0
    assert np.abs(prob - 1 / (1 + np.exp(logits[0] - logits[1]))).max() < 1e-4


def test_softmax_outputs_become_logits_with_the_same_softmax():
    logits = np.random.default_rng(3).normal(size=(1, 3, 4, 5)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    back = outputs_to_logits(p, "softmax", 3).numpy()
    q = np.exp(back) / np.exp(back).sum(axis=1, keepdims=True)
    assert np.abs(q - p).max() < 1e-6


@pytest.mark.parametrize("options", [
    {},
    {"is_slide": True, "crop_size": (32, 24), "stride": (16, 16)},
    {"aug": True, "flip_horizontal": True, "flip_vertical": True},
], ids=["whole", "slide", "flips"])
def test_evaluate_metrics_equal_across_backends(workspace, logits_export, options):
    deploy = load_deploy(logits_export)
    dataset = Dataset(str(workspace["data"]), deploy.transforms, num_classes=2, mode="val",
                      val_path="val_list.txt")
    results = {}
    for kind in KINDS:
        source = workspace["model"] if kind == "paddle" else logits_export
        results[kind] = evaluate(build_backend(kind, source, num_threads=2), dataset, 2,
                                 EvalOptions(InferenceOptions.build(**options), auc_roc=True,
                                             progress=False), print_detail=False)
    for kind in ("inference", "onnxruntime"):
        for key in METRICS:
            assert abs(results[kind][key] - results["paddle"][key]) < TOL, (kind, key)
        assert results[kind]["num_images"] == 3


def test_val_tool_with_onnxruntime_matches_eager(workspace, logits_export, argmax_export):
    val = _load_tool("val")
    eager_json = workspace["root"] / "eager.json"
    ort_json = workspace["root"] / "ort.json"
    val.main(["--config", workspace["config"], "--model_path", workspace["weights"],
              "--save_json", str(eager_json), "--device", "cpu"])
    val.main(["--config", workspace["config"], "--backend", "onnxruntime", "--model_dir",
              logits_export, "--save_json", str(ort_json), "--device", "cpu"])
    eager, ort = json.loads(eager_json.read_text()), json.loads(ort_json.read_text())
    assert "auc_roc" in eager
    for key in METRICS:
        assert abs(eager[key] - ort[key]) < TOL, key
    with pytest.raises(BackendError, match="output_op argmax"):
        val.main(["--config", workspace["config"], "--backend", "inference", "--model_dir",
                  argmax_export, "--device", "cpu"])


def test_onnx_export_asks_for_no_failing_optimizer_pass(workspace, tmp_path, capfd):
    out = tmp_path / "softmax"
    export_model(workspace["model"], str(out), num_classes=2, output_op="softmax", onnx=True,
                 transforms=[{"type": "Normalize"}])
    printed = "".join(capfd.readouterr())
    assert os.path.getsize(out / "model.onnx") > 0
    for text in ("Fail to optimize", "Skip onnxoptimizer", "Fail to fold", "Skip folding"):
        assert text not in printed


def test_backend_and_export_errors(workspace, tmp_path, logits_export):
    with pytest.raises(BackendError, match="exported model"):
        build_backend("onnxruntime", workspace["model"])
    with pytest.raises(BackendError, match="deploy.yaml"):
        build_backend("inference", str(tmp_path))
    with pytest.raises(BackendError, match="one of"):
        build_backend("tensorrt", logits_export)
    with pytest.raises(ExportError, match="output_op"):
        export_model(workspace["model"], str(tmp_path), num_classes=2, output_op="sigmoid")
    with pytest.raises(ExportError, match="N C H W"):
        parse_input_shape([1, 3, 64])
    assert parse_input_shape([1, 3, 64, 0]) == [1, 3, 64, -1]
    assert parse_input_shape([64, 32]) == [-1, 3, 64, 32]
    with pytest.raises(ExportError, match="unknown arguments"):
        deploy_transforms([{"type": "Normalize", "means": [0.5]}])
    no_onnx = tmp_path / "no_onnx"
    no_onnx.mkdir()
    with open(os.path.join(logits_export, "deploy.yaml")) as f:
        deploy = yaml.safe_load(f)
    del deploy["Deploy"]["onnx"]
    (no_onnx / "deploy.yaml").write_text(yaml.safe_dump(deploy))
    with pytest.raises(BackendError, match="--onnx"):
        build_backend("onnxruntime", str(no_onnx))

    builder = SegBuilder(Config({"model": {"type": "UNet", "num_classes": 3}}))
    with pytest.raises(BackendError, match="exported for 2 classes but the config has 3"):
        builder.exported_val_dataset(build_backend("onnxruntime", logits_export))
