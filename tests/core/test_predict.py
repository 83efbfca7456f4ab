"""Prediction to files: palette PNG = argmax, overlay size, probabilities, skipping bad
images, input discovery, and tools/predict.py end to end. Tiny UNet, tiny images."""
import importlib.util
import os

import cv2
import numpy as np
import paddle
import pytest
from PIL import Image

from paddleseg_unet.core.infer import InferenceOptions
from paddleseg_unet.core.predict import (PredictError, collect_images, output_names, predict,
                                         predict_image)
from paddleseg_unet.models.unet import UNet
from paddleseg_unet.transforms import Compose
from paddleseg_unet.utils.visualize import get_color_map
from paddleseg_unet.utils.weights import save_pdparams

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("PADDLESEG_UNET_SHARED_DATA",
                        os.path.join(REPO, "..", "shared", "data"))


@pytest.fixture(scope="module")
def model():
    paddle.seed(7)
    net = UNet(num_classes=2, base_channels=4)
    net.eval()
    return net


def _reference(net, rgb):
    """Softmax probabilities computed directly: Normalize by hand, one forward, numpy."""
    x = (rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    with paddle.no_grad():
        logits = net(paddle.to_tensor(x.transpose(2, 0, 1)[None].copy()))[0].numpy()[0]
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def _write_images(folder, sizes, seed=0, smooth=False):
    """Random RGB PNGs; ``smooth`` ones (upsampled 4x4 noise) survive JPEG almost intact."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    images = {}
    for i, (h, w) in enumerate(sizes):
        rgb = rng.integers(0, 256, size=(4, 4, 3) if smooth else (h, w, 3), dtype=np.uint8)
        if smooth:
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        path = os.path.join(folder, f"img{i}.png")
        cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images[path] = rgb
    return images


def test_predict_writes_argmax_palette_overlay_and_prob(tmp_path, model):
    images = _write_images(str(tmp_path / "in" / "sub"), [(37, 45), (32, 20)])
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    paths, root = collect_images(str(tmp_path / "in"))
    assert sorted(paths) == sorted(list(images) + [str(bad)]) and root == str(tmp_path / "in")
    out = str(tmp_path / "out")
    summary = predict(model, Compose([{"type": "Normalize"}]), paths, out, image_dir=root,
                      num_classes=2, color_map=get_color_map(2, [(0, 0, 0), (0, 255, 0)]), save_prob=True,
                      overlay_weight=0.5, progress=False)
    assert sorted(summary.written) == sorted(images)
    assert [p for p, _ in summary.failed] == [str(bad)]
    assert "cannot be decoded" in summary.failed[0][1]
    for path, rgb in images.items():
        name = os.path.splitext(os.path.relpath(path, root))[0]
        prob = _reference(model, rgb)
        with Image.open(os.path.join(out, "pseudo_color_prediction", name + ".png")) as im:
            assert im.mode == "P"
            assert np.array_equal(np.array(im), prob.argmax(axis=0))
            assert im.getpalette()[3:6] == [0, 255, 0]
        overlay = cv2.imread(os.path.join(out, "added_prediction", name + ".jpg"))
        assert overlay.shape == rgb.shape
        saved = cv2.imread(os.path.join(out, "probability", name + ".png"), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.uint16
        assert np.abs(saved / 65535.0 - prob[1]).max() < 1e-4


def test_predict_image_with_flip_and_slide_matches_manual_average(model):
    rgb = np.random.default_rng(3).integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
    pred, prob = predict_image(model, Compose([{"type": "Normalize"}]), rgb,
                               inference=InferenceOptions(flip_horizontal=True))
    x = (rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    with paddle.no_grad():
        a = model(paddle.to_tensor(x.transpose(2, 0, 1)[None].copy()))[0].numpy()
        b = model(paddle.to_tensor(x[:, ::-1].transpose(2, 0, 1)[None].copy()))[0].numpy()
    mean = (a + b[..., ::-1]) / 2
    assert np.array_equal(pred, mean[0].argmax(axis=0))
    e = np.exp(mean[0] - mean[0].max(axis=0))
    assert np.abs(prob - e / e.sum(axis=0)).max() < 1e-5
    slid, _ = predict_image(model, Compose([{"type": "Normalize"}]), rgb,
                            inference=InferenceOptions(is_slide=True, crop_size=(32, 32),
                                                       stride=(16, 16)))
    assert slid.shape == (40, 36)


def test_collect_images_list_file_and_errors(tmp_path):
    images = _write_images(str(tmp_path / "imgs"), [(20, 20), (20, 20)])
    names = sorted(os.path.basename(p) for p in images)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\nimgs/{names[0]} labels/x.png\n\nimgs/{names[1]}\n")
    paths, root = collect_images(str(listing))
    assert root is None
    assert paths == [str(tmp_path / "imgs" / n) for n in names]
    single, root = collect_images(paths[0])
    assert single == [paths[0]] and root is None
    with pytest.raises(PredictError, match="does not exist"):
        collect_images(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="no image files"):
        collect_images(str(tmp_path / "empty"))
    assert output_names(["/a/x.png", "/a/y.jpg", "/a/y.png"], "/a") == ["x", "y.jpg", "y.png"]
    assert output_names(["/a/b/x.png"], "/a") == [os.path.join("b", "x")]


def test_save_prob_refuses_multiclass(tmp_path):
    net = UNet(num_classes=3, base_channels=4)
    with pytest.raises(PredictError, match="two-class"):
        predict(net, Compose([]), [], str(tmp_path), num_classes=3, save_prob=True,
                progress=False)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predict_tool_end_to_end(tmp_path, model):
    weights = str(tmp_path / "w.pdparams")
    save_pdparams(model.state_dict(), weights)
    config = tmp_path / "c.yml"
    config.write_text("model: {type: UNet, num_classes: 2, base_channels: 4}\n"
                      "val_dataset:\n  type: DRIVE\n  dataset_root: nowhere\n  mode: val\n"
                      "  transforms: [{type: Normalize}]\n")
    images = _write_images(str(tmp_path / "in"), [(24, 30)], seed=5, smooth=True)
    (tmp_path / "in" / "zero.jpg").write_bytes(b"")
    out = tmp_path / "out"
    _load_tool("predict").main(["--config", str(config), "--model_path", weights,
                                "--image_path", str(tmp_path / "in"), "--save_dir", str(out),
                                "--device", "cpu", "--no_progress", "--overlay_weight", "1"])
    rgb = next(iter(images.values()))
    with Image.open(out / "pseudo_color_prediction" / "img0.png") as im:
        pred = np.array(im)
    assert np.array_equal(pred, _reference(model, rgb).argmax(axis=0))
    overlay = cv2.cvtColor(cv2.imread(str(out / "added_prediction" / "img0.jpg")),
                           cv2.COLOR_BGR2RGB).astype(int)
    # weight 1: vessel pixels are pure green, background pixels keep the image (JPEG noise).
    assert 0 < (pred == 1).sum() < pred.size
    assert np.abs(overlay[pred == 0] - rgb[pred == 0]).mean() < 6
    assert np.abs(overlay[pred == 1] - [0, 255, 0]).mean() < 25
    assert not (out / "added_prediction" / "zero.jpg").exists()


def test_predict_on_real_drive_image(tmp_path, model):
    src = os.path.join(SHARED, "DRIVE", "test", "images", "01_test.tif")
    if not os.path.isfile(src):
        pytest.skip(f"shared data not found at {SHARED} (set PADDLESEG_UNET_SHARED_DATA)")
    summary = predict(model, Compose([{"type": "Normalize"}]), [src], str(tmp_path),
                      num_classes=2, progress=False)
    assert summary.written == [src] and not summary.failed
    with Image.open(tmp_path / "pseudo_color_prediction" / "01_test.png") as im:
        assert im.size == (565, 584)
    assert cv2.imread(str(tmp_path / "added_prediction" / "01_test.jpg")).shape == (584, 565, 3)
