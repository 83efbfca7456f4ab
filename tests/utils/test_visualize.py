"""Colour maps, palette PNGs, overlays, 16-bit probability PNGs and training curves."""
import importlib.util
import math
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from paddleseg_unet.utils.visualize import (VisualizeError, blend, colorize,
                                            get_color_map, parse_train_log,
                                            plot_training_curves, read_training_curves,
                                            save_palette_png, save_prob_png, save_rgb_image,
                                            voc_color_map)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The first ten PASCAL VOC colours, as published with the VOC devkit.
VOC_FIRST = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
             (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0)]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_voc_color_map_matches_published_colours():
    assert voc_color_map(10).tolist() == [list(c) for c in VOC_FIRST]
    colors = voc_color_map(256)
    assert len({tuple(c) for c in colors}) == 256  # every class distinct


def test_palette_png_indices_are_class_ids(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(13, 17)).astype(np.int64)
    colors = get_color_map(5)
    path = str(tmp_path / "sub" / "p.png")
    save_palette_png(pred, colors, path)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert np.array_equal(np.array(im), pred)
        palette = np.array(im.getpalette()[:15]).reshape(5, 3)
    assert np.array_equal(palette, colors)
    assert not [f for f in os.listdir(tmp_path / "sub") if f.startswith(".tmp")]
    with pytest.raises(VisualizeError, match="class ids"):
        save_palette_png(pred, colors[:3], path)


def test_colorize_and_blend_against_numpy():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    pred = rng.integers(0, 2, size=(6, 7))
    colors = get_color_map(2, [(0, 0, 0), (0, 255, 0)])
    color = colorize(pred, colors)
    assert np.array_equal(color[pred == 1], np.tile([0, 255, 0], ((pred == 1).sum(), 1)))
    out = blend(image, color, 0.3)
    expected = np.rint(0.7 * image.astype(np.float64) + 0.3 * color).astype(np.uint8)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    masked = blend(image, color, 0.3, mask=pred != 0)
    assert np.array_equal(masked[pred == 0], image[pred == 0])
    assert np.array_equal(masked[pred == 1], out[pred == 1])
    with pytest.raises(VisualizeError):
        blend(image, color[:3], 0.3)
    with pytest.raises(VisualizeError):
        blend(image, color, 1.5)


def test_prob_png_is_16_bit(tmp_path):
    prob = np.linspace(0, 1, 60).reshape(6, 10)
    path = str(tmp_path / "prob.png")
    save_prob_png(prob, path)
    read = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert read.dtype == np.uint16 and read.shape == (6, 10)
    assert np.abs(read / 65535.0 - prob).max() <= 0.5 / 65535 + 1e-12


def test_rgb_image_round_trip(tmp_path):
    img = np.zeros((5, 8, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    save_rgb_image(img, str(tmp_path / "a.png"))
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "a.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, img)


def _write_log(path, iters=(10, 20, 30, 40), eval_at=(20, 40)):
    lines = ["2026-01-01 00:00:00 [INFO] Start training"]
    for it in iters:
        lines.append(f"2026-01-01 00:00:00 [INFO] [TRAIN] epoch: 1, iter: {it}/40, "
                     f"loss: {1.0 / it:.4f}, lr: {0.01 * (1 - it / 40) ** 0.9:.6f}, "
                     f"batch_cost: 0.1000, reader_cost: 0.00100, ips: 40.0000 samples/sec "
                     f"| ETA 00:00:01")
        if it in eval_at:
            lines.append(f"2026-01-01 00:00:00 [INFO] [EVAL] #Images: 4 mIoU: {it / 100:.4f} "
                         f"Acc: 0.9000 Kappa: 0.5000 Dice: 0.7000 Auc_roc: 0.9500")
            lines.append("2026-01-01 00:00:00 [INFO] [EVAL] Class IoU: ")
            lines.append(f"2026-01-01 00:00:00 [INFO] [EVAL] The model with the best "
                         f"validation mIoU (0.4) was saved at iter {it}.")
    path.write_text("\n".join(lines) + "\n")


def test_parse_train_log(tmp_path):
    log = tmp_path / "train.log"
    _write_log(log)
    curves = parse_train_log(str(log))
    assert curves["train"]["loss"] == [(10, 0.1), (20, 0.05), (30, 0.0333), (40, 0.025)]
    assert [s for s, _ in curves["train"]["lr"]] == [10, 20, 30, 40]
    assert math.isclose(curves["train"]["lr"][0][1], round(0.01 * 0.75 ** 0.9, 6))
    assert curves["eval"]["mIoU"] == [(20, 0.2), (40, 0.4)]
    assert curves["eval"]["Auc_roc"] == [(20, 0.95), (40, 0.95)]
    assert "#Images" not in curves["eval"] and "epoch" not in curves["train"]
    other = tmp_path / "notes.txt"
    other.write_text("nothing to see\n")
    with pytest.raises(VisualizeError, match="training log"):
        parse_train_log(str(other))


def test_plot_from_text_log_and_visualdl(tmp_path, capsys):
    log = tmp_path / "train.log"
    _write_log(log)
    out = tmp_path / "curves.png"
    assert plot_training_curves(read_training_curves(str(log)), str(out)) == [
        "loss", "lr", "metrics"]
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > picture.shape[0] > 100

    from visualdl import LogWriter
    vdl = tmp_path / "vdl_log"
    with LogWriter(str(vdl)) as writer:
        for it in (10, 20, 30):
            writer.add_scalar("Train/loss", 1.0 / it, it)
            writer.add_scalar("Train/lr", 0.01, it)
        writer.add_scalar("Evaluate/miou", 0.5, 30)
    curves = read_training_curves(str(vdl))
    assert [s for s, _ in curves["train"]["loss"]] == [10, 20, 30]
    assert math.isclose(curves["train"]["loss"][1][1], 0.05, rel_tol=1e-6)
    assert curves["eval"]["miou"] == [(30, 0.5)]
    _tool("plot_log").main([str(vdl), "--smooth", "2"])
    assert os.path.isfile(vdl / "training_curves.png")
    assert "loss: 3 points" in capsys.readouterr().out
    with pytest.raises(VisualizeError, match="not found"):
        read_training_curves(str(tmp_path / "missing"))
