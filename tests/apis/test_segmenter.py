"""Segmenter: the README's example runs, and predictions equal tools/predict.py's (eager and
exported)."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "quickstart/unet_synthetic_vessels"


def tool(*args, cwd=REPO):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quick start, 2 iterations at width 4, in a scratch folder (as a reader would)."""
    work = tmp_path_factory.mktemp("segmenter")
    tool(os.path.join(REPO, "tools", "train.py"), "--config", CONFIG, "--iters", "2",
         "--save_interval", "2", "--do_eval", "--save_dir", "output/quickstart",
         "--opts", "model.base_channels=4", cwd=str(work))
    from paddleseg_unet.datasets import SyntheticVessels
    image = os.path.join(SyntheticVessels(mode="val").dataset_root, "images", "val",
                         "synth_030.png")
    return {"work": str(work), "weights": str(work / "output" / "quickstart" / "best_model"),
            "image": image}


def test_readme_example_runs(trained):
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    code = re.search(r"## From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace('weights="output/quickstart/best_model")',
                        'weights="output/quickstart/best_model", opts=["model.base_channels=4"])')
    image_dir = os.path.dirname(os.path.dirname(os.path.dirname(trained["image"])))
    code = code.replace('os.path.expanduser("~/.paddleseg_unet/datasets/synthetic_vessels_n40_'
                        'val10_s256_seed0_v1"', f'({image_dir!r}')
    proc = subprocess.run([sys.executable, "-c", code], cwd=trained["work"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(256, 256) (2, 256, 256) ['background', 'vessel']" in proc.stdout


def test_predictions_equal_predict_py_eager_and_exported(trained, tmp_path):
    from paddleseg_unet import Segmenter

    tool("tools/predict.py", "--config", CONFIG, "--model_path", trained["weights"],
         "--opts", "model.base_channels=4", "--image_path", trained["image"], "--save_dir",
         str(tmp_path / "pred"), "--aug_pred", "--flip_horizontal", "--no_progress")
    expected = np.array(Image.open(tmp_path / "pred" / "pseudo_color_prediction"
                                   / "synth_030.png"))
    seg = Segmenter.from_config(CONFIG, weights=trained["weights"],
                                opts=["model.base_channels=4"])
    result = seg.predict(trained["image"], flip=True)
    assert result.label.dtype == np.int32 and result.label.shape == expected.shape
    assert np.array_equal(result.label, expected)
    np.testing.assert_allclose(result.prob.sum(axis=0), 1.0, atol=1e-5)
    rgb = np.array(Image.open(trained["image"]).convert("RGB"))
    both = seg.predict([rgb, trained["image"]])
    assert np.array_equal(both[0].label, both[1].label)
    slid = seg.predict(rgb, slide=((128, 128), (96, 96)))
    assert slid.label.shape == rgb.shape[:2]
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        seg.predict(rgb[..., 0])

    tool("tools/export.py", "--config", CONFIG, "--model_path", trained["weights"], "--opts",
         "model.base_channels=4", "--save_dir", str(tmp_path / "export"), "--output_op",
         "softmax", "--onnx")
    plain = seg.predict(rgb)
    for backend in ("onnxruntime", "inference"):
        exported = Segmenter.from_exported(str(tmp_path / "export"), backend=backend)
        got = exported.predict(rgb)
        assert exported.class_names == ["background", "vessel"]
        assert np.mean(got.label != plain.label) < 1e-3, backend  # float ties aside
        np.testing.assert_allclose(got.prob, plain.prob, atol=1e-4)
