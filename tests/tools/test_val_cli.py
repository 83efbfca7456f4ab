"""tools/val.py end to end on real DRIVE (converted from ../shared/data), with a tiny model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVE_SRC = os.path.join(SHARED_DATA, "DRIVE")
CONFIG = os.path.join(REPO, "configs", "unet", "unet_drive_128x128_40k.yml")


def run_tool(*args, check=True):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def drive_root(tmp_path_factory):
    if not os.path.isdir(DRIVE_SRC):
        pytest.skip(f"real DRIVE data not found at {DRIVE_SRC}")
    from paddleseg_unet.datasets.converters import convert
    root = str(tmp_path_factory.mktemp("data") / "DRIVE")
    convert("drive", DRIVE_SRC, root)
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import paddle

    from paddleseg_unet.models import UNet
    from paddleseg_unet.utils.weights import save_pdparams
    paddle.seed(0)
    path = str(tmp_path_factory.mktemp("w") / "tiny.pdparams")
    save_pdparams(UNet(num_classes=2, base_channels=4).state_dict(), path)
    return path


def fov_pixels_from_official_masks():
    total = 0
    for nn in range(1, 21):
        mask = np.asarray(Image.open(os.path.join(DRIVE_SRC, "test", "mask",
                                                  f"{nn:02d}_test_mask.gif")).convert("L"))
        total += int((mask > 127).sum())
    return total


@pytest.mark.parametrize("use_fov", [True])  # all-pixels scoring: tests/core/test_evaluate.py
def test_val_on_real_drive_writes_complete_json(drive_root, tiny_weights, tmp_path, use_fov):
    out = tmp_path / "metrics.json"
    args = ["tools/val.py", "--config", CONFIG, "--model_path", tiny_weights, "--device", "cpu",
            "--opts", "model.base_channels=4", f"val_dataset.dataset_root={drive_root}",
            "--save_json", str(out)] + (["--use_fov"] if use_fov else [])
    proc = run_tool(*args)
    assert "[EVAL] #Images: 20 mIoU:" in proc.stdout and "Auc_roc:" in proc.stdout
    data = json.loads(out.read_text())
    assert data["num_images"] == 20
    expected = fov_pixels_from_official_masks() if use_fov else 20 * 565 * 584
    assert data["num_pixels"] == expected
    assert data["scored_region"] == ("inside the field-of-view mask" if use_fov else "all pixels")
    assert np.array(data["confusion_matrix"]).sum() == expected
    for key in ("miou", "mdice", "acc", "kappa", "auc_roc", "dice_fg", "sensitivity",
                "specificity"):
        assert data[key] is None or -1.0 <= data[key] <= 1.0, key
    assert 0 <= data["auc_error_bound"] < 1e-3
    assert len(data["class_iou"]) == 2 and len(data["class_precision"]) == 2
    assert data["flags"]["auc_roc"] is True and data["flags"]["use_fov"] is use_fov


def test_val_refuses_partial_weights_with_one_line_error(drive_root, tiny_weights):
    # Weights of a width-4 model do not fit the default width-64 model: a clear error.
    proc = run_tool("tools/val.py", "--config", CONFIG, "--model_path", tiny_weights,
                    "--device", "cpu", "--opts", f"val_dataset.dataset_root={drive_root}",
                    check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "\nerror: " in "\n" + proc.stderr and "shape" in proc.stderr


def test_bad_config_key_is_one_line_error(tmp_path):
    proc = run_tool("tools/train.py", "--config", CONFIG, "--opts", "model.num_clases=3",
                    check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "model.num_clases" in proc.stderr and "Did you mean model.num_classes" in proc.stderr


@pytest.mark.parametrize("tool", ["train.py", "val.py", "predict.py", "export.py"])
def test_tools_have_help(tool):
    proc = run_tool(f"tools/{tool}", "--help")
    assert "--config" in proc.stdout


def test_two_process_val_equals_single_process(tmp_path, tiny_weights):
    """paddle.distributed.launch with 2 CPU ranks: each scores its share, the counters are
    summed once, and the JSON equals the single-process one."""
    sys.path.insert(0, os.path.join(REPO, "tests", "core"))
    try:
        from test_evaluate import write_retina_layout
    finally:
        sys.path.pop(0)
    root = write_retina_layout(str(tmp_path / "ds"), [(40, 52), (37, 45), (64, 48), (33, 33),
                                                      (50, 41)])
    # One thread per process in both runs: conv results then agree to the bit.
    common = ["--config", CONFIG, "--model_path", tiny_weights, "--device", "cpu",
              "--num_threads", "1", "--opts",
              "model.base_channels=4", f"val_dataset.dataset_root={root}"]
    run_tool("tools/val.py", *common, "--save_json", str(tmp_path / "single.json"),
             "--per_image", str(tmp_path / "single.csv"))
    env_pop = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(tmp_path / "log"), "tools/val.py", *common,
         "--save_json", str(tmp_path / "dist.json"), "--per_image", str(tmp_path / "dist.csv")],
        cwd=REPO, env=dict(env_pop, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=300)
    logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert proc.returncode == 0, proc.stderr[-2000:] + logs
    single = json.loads((tmp_path / "single.json").read_text())
    dist = json.loads((tmp_path / "dist.json").read_text())
    assert dist["num_images"] == single["num_images"] == 5
    assert dist["confusion_matrix"] == single["confusion_matrix"]
    for key in ("miou", "mdice", "acc", "kappa", "auc_roc", "num_pixels"):
        assert dist[key] == single[key], key
    # Rows gathered to rank 0 in the dataset's order: the same file as one process.
    assert (tmp_path / "dist.csv").read_text() == (tmp_path / "single.csv").read_text()
    assert len((tmp_path / "single.csv").read_text().splitlines()) == 6
    assert dist["per_image_summary"] == single["per_image_summary"]


def test_auto_backend_equals_eager_on_real_drive(drive_root, tiny_weights, tmp_path):
    common = ["tools/val.py", "--config", CONFIG, "--model_path", tiny_weights, "--device",
              "cpu", "--opts", "model.base_channels=4", f"val_dataset.dataset_root={drive_root}",
              "--use_fov"]
    eager = run_tool(*common, "--backend", "paddle", "--save_json", str(tmp_path / "e.json"))
    auto = run_tool(*common, "--save_json", str(tmp_path / "a.json"))  # the default: auto
    assert "Running ONNX Runtime on the exported model" in auto.stdout
    assert "Running" not in eager.stdout
    e = json.loads((tmp_path / "e.json").read_text())
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["num_pixels"] == e["num_pixels"]
    for key in ("miou", "mdice", "acc", "kappa", "auc_roc", "dice_fg"):
        assert abs(a[key] - e[key]) <= 1e-4, key
