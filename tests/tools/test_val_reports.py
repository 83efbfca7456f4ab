"""tools/val.py reports on generated retina-layout data with a tiny model: per-image CSV
(checked against numpy on the saved predictions), predictions saved during evaluation (the
same files predict.py writes), ROC / PR curves, and pooled numbers the flags leave alone."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "unet", "unet_drive_128x128_40k.yml")
sys.path.insert(0, os.path.join(REPO, "tests", "core"))
from test_evaluate import write_retina_layout  # noqa: E402

sys.path.pop(0)


def run_tool(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import paddle

    from paddleseg_unet.models import UNet
    from paddleseg_unet.utils.weights import save_pdparams
    work = tmp_path_factory.mktemp("reports")
    root = write_retina_layout(str(work / "ds"), [(40, 52), (37, 45), (64, 48)], seed=3)
    paddle.seed(3)
    weights = str(work / "tiny.pdparams")
    model = UNet(num_classes=2, base_channels=4)
    # A little bias towards the vessel class, so both classes are predicted somewhere.
    state = model.state_dict()
    state["cls.bias"].set_value(np.array([0.0, 0.05], "float32"))
    save_pdparams(state, weights)
    common = ["--config", CONFIG, "--model_path", weights, "--device", "cpu", "--opts",
              "model.base_channels=4", f"val_dataset.dataset_root={root}"]
    plain = work / "plain.json"
    run_tool("tools/val.py", *common, "--save_json", str(plain))
    out = work / "out"
    proc = run_tool("tools/val.py", *common, "--use_fov", "--per_image", str(out / "rows.csv"),
                    "--save_dir", str(out / "pred"), "--save_prob", "--curves",
                    str(out / "curves"), "--save_json", str(out / "m.json"))
    return dict(root=root, weights=weights, common=common, plain=plain, out=out, log=proc.stdout)


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_per_image_dice_equals_numpy_on_the_saved_predictions(setup):
    rows = read_rows(setup["out"] / "rows.csv")
    assert [r["name"] for r in rows] == ["im0", "im1", "im2"]
    dices = []
    for row in rows:
        pred = np.array(Image.open(setup["out"] / "pred" / "pseudo_color_prediction"
                                   / f"{row['name']}.png"))
        label = np.array(Image.open(os.path.join(setup["root"], "annotations", "val",
                                                 f"{row['name']}.png")))
        assert (int(row["height"]), int(row["width"])) == label.shape
        scored = label != 255
        tp = np.sum((pred == 1) & (label == 1) & scored)
        dice = 2 * tp / (np.sum((pred == 1) & scored) + np.sum((label == 1) & scored))
        assert float(row["f1"]) == pytest.approx(dice, abs=1e-6)
        assert float(row["dice_vessel"]) == pytest.approx(dice, abs=1e-6)
        assert row["fov_f1"] != "" and row["auc_roc"] != ""
        dices.append(dice)
    data = json.loads((setup["out"] / "m.json").read_text())
    summary = data["per_image_summary"]["f1"]
    assert summary["mean"] == pytest.approx(np.mean(dices), abs=1e-6)
    assert summary["std"] == pytest.approx(np.std(dices, ddof=1), abs=1e-6)
    assert "[EVAL] Per image (mean +- std over 3 images): miou" in setup["log"]


def test_pooled_numbers_are_unchanged_by_the_report_flags(setup):
    plain = json.loads(setup["plain"].read_text())
    full = json.loads((setup["out"] / "m.json").read_text())
    # The report run scores inside the FOV; its all-pixel pooled figures are the plain ones.
    again = run_tool("tools/val.py", *setup["common"], "--per_image",
                     str(setup["out"] / "again.csv"), "--curves", str(setup["out"] / "c2"),
                     "--save_json", str(setup["out"] / "again.json"))
    again = json.loads((setup["out"] / "again.json").read_text())
    for key in ("miou", "mdice", "acc", "kappa", "dice_fg", "num_pixels", "confusion_matrix"):
        assert again[key] == plain[key], key
    assert full["scored_region"] == "inside the field-of-view mask"
    assert again["auc_roc"] == pytest.approx(plain["auc_roc"], abs=1e-12)


def test_curves_csv_integrates_to_the_reported_auc(setup):
    data = json.loads((setup["out"] / "m.json").read_text())
    with open(setup["out"] / "curves" / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["threshold", "tpr", "fpr", "precision", "recall"]
    fpr = np.array([float(r["fpr"]) for r in rows])
    tpr = np.array([float(r["tpr"]) for r in rows])
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert auc == pytest.approx(data["auc_roc"], abs=1e-6)
    recall = np.array([float(r["recall"]) for r in rows])
    precision = np.array([float(r["precision"]) for r in rows])
    assert float(np.sum(np.diff(recall) * precision[1:])) == pytest.approx(
        data["average_precision"], abs=1e-6)
    for png in ("roc.png", "pr.png"):
        with Image.open(setup["out"] / "curves" / png) as im:
            assert im.size[0] > 200
    assert 0 < data["best_f1"]["threshold"] < 1


def test_saved_predictions_equal_predict_py_and_error_map_colours(setup, tmp_path):
    image = os.path.join(setup["root"], "images", "val", "im1.png")
    run_tool("tools/predict.py", "--config", CONFIG, "--model_path", setup["weights"],
             "--device", "cpu", "--opts", "model.base_channels=4", "--image_path", image,
             "--save_dir", str(tmp_path), "--save_prob", "--no_progress")
    val_dir = setup["out"] / "pred"
    for sub, ext in (("pseudo_color_prediction", "png"), ("probability", "png")):
        a = np.array(Image.open(tmp_path / sub / f"im1.{ext}"))
        b = np.array(Image.open(val_dir / sub / f"im1.{ext}"))
        assert np.array_equal(a, b), sub
    a = np.asarray(Image.open(tmp_path / "added_prediction" / "im1.jpg"), dtype=int)
    b = np.asarray(Image.open(val_dir / "added_prediction" / "im1.jpg"), dtype=int)
    assert np.abs(a - b).max() <= 1
    pred = np.array(Image.open(val_dir / "pseudo_color_prediction" / "im1.png"))
    label = np.array(Image.open(os.path.join(setup["root"], "annotations", "val", "im1.png")))
    err = np.array(Image.open(val_dir / "error_map" / "im1.png").convert("RGB"))
    rgb = np.array(Image.open(image).convert("RGB"))
    scored = label != 255
    tp = (pred == 1) & (label == 1) & scored
    fp = (pred == 1) & (label == 0) & scored
    fn = (pred == 0) & (label == 1) & scored
    assert tp.any() and fp.any() and fn.any()
    assert np.all(err[tp] == (0, 255, 0)) and np.all(err[fp] == (255, 0, 0))
    assert np.all(err[fn] == (0, 0, 255))
    rest = ~(tp | fp | fn)
    assert np.array_equal(err[rest], rgb[rest])
