"""--backend auto: the cached, checked export of eager weights scores as the eager model
(within 1e-4) with every inference feature, the cache is atomic, reused and safe with two
processes, and anything that cannot be exported runs eager."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from paddleseg_unet.core.backends import Backend
from paddleseg_unet.core.evaluate import EvalOptions, evaluate
from paddleseg_unet.core.fast_path import cached_export, fast_model
from paddleseg_unet.core.infer import InferenceOptions
from paddleseg_unet.datasets import DRIVE
from paddleseg_unet.models import UNet
from paddleseg_unet.utils.weights import save_pdparams

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_evaluate import write_retina_layout  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTION = {"type": "UNet", "num_classes": 2, "base_channels": 4}


class Info:
    num_classes = 2
    transforms = [{"type": "Normalize"}]
    class_names = ["background", "vessel"]
    color_map = np.array([[0, 0, 0], [0, 255, 0]], np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("fast")
    paddle.seed(4)
    model = UNet(2, base_channels=4)
    model.eval()
    weights = str(work / "w.pdparams")
    save_pdparams(model.state_dict(), weights)
    root = write_retina_layout(str(work / "ds"), [(40, 52), (37, 45), (64, 48)], seed=4)
    return {"work": work, "model": model, "weights": weights, "root": root}


@pytest.mark.parametrize("inference", [
    InferenceOptions(),
    InferenceOptions(flip_horizontal=True, flip_vertical=True, scales=(0.75, 1.0)),
    InferenceOptions(is_slide=True, crop_size=(32, 24), stride=(16, 16)),
], ids=["whole", "flips+scales", "slide"])
def test_auto_scores_as_eager_within_1e4(setup, inference, monkeypatch):
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(setup["work"] / "home"))
    fast, why = fast_model(setup["model"], setup["weights"], SECTION, Info())
    assert isinstance(fast, Backend) and "exported model" in why
    dataset = DRIVE(dataset_root=setup["root"], transforms=[{"type": "Normalize"}], mode="val")
    for use_fov in (False, True):
        options = EvalOptions(inference, auc_roc=True, use_fov=use_fov, progress=False)
        eager = evaluate(setup["model"], dataset, 2, options, print_detail=False)
        got = evaluate(fast, dataset, 2, options, print_detail=False)
        for key in ("miou", "mdice", "acc", "kappa", "auc_roc", "dice_fg"):
            assert abs(got[key] - eager[key]) <= 1e-4, (key, got[key], eager[key])
        assert got["num_pixels"] == eager["num_pixels"]


def test_the_cache_is_reused_and_never_half_written(setup, monkeypatch):
    cache = str(setup["work"] / "cache")
    first = cached_export(setup["model"], setup["weights"], SECTION, num_classes=2,
                          transforms=Info.transforms, class_names=Info.class_names,
                          cache_dir=cache)
    import paddleseg_unet.core.fast_path as fp

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(fp, "export_model", no_export)
    assert cached_export(setup["model"], setup["weights"], SECTION, num_classes=2,
                         transforms=Info.transforms, class_names=Info.class_names,
                         cache_dir=cache) == first
    # Other weights: a new entry; a failure while making it leaves nothing behind.
    other = str(setup["work"] / "other.pdparams")
    paddle.seed(5)
    save_pdparams(UNet(2, base_channels=4).state_dict(), other)
    monkeypatch.setattr(fp, "export_model", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("killed mid-export")))
    with pytest.raises(RuntimeError, match="killed"):
        cached_export(setup["model"], other, SECTION, num_classes=2,
                      transforms=Info.transforms, class_names=Info.class_names,
                      cache_dir=cache)
    assert sorted(os.listdir(cache)) == [os.path.basename(first)]
    # ... and fast_model then runs the eager model, saying why.
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(setup["work"] / "home2"))
    chosen, why = fast_model(setup["model"], other, SECTION, Info())
    assert chosen is setup["model"] and why.startswith("eager Paddle (the export is not "
                                                       "possible here: killed mid-export")


def test_two_processes_make_one_cache_entry(setup):
    cache = str(setup["work"] / "race")
    code = textwrap.dedent(f"""
        import json, sys
        import paddle
        from paddleseg_unet.core.fast_path import cached_export
        from paddleseg_unet.models import UNet
        from paddleseg_unet.utils.weights import load_weights
        model = UNet(2, base_channels=4)
        load_weights(model, {setup['weights']!r})
        model.eval()
        print(json.dumps(cached_export(model, {setup['weights']!r}, {SECTION!r},
                                       num_classes=2, transforms=[{{"type": "Normalize"}}],
                                       class_names=["background", "vessel"],
                                       cache_dir={cache!r})))
        """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    paths = {json.loads(o[0].strip().splitlines()[-1]) for o in outs}
    assert len(paths) == 1
    assert os.listdir(cache) == [os.path.basename(paths.pop())]  # no temporary left


def test_on_a_gpu_or_without_weights_file_eager_runs(setup, monkeypatch):
    chosen, why = fast_model(setup["model"], None, SECTION, Info())
    assert chosen is setup["model"] and "no weights file" in why
    monkeypatch.setattr(paddle, "get_device", lambda: "gpu:0")
    chosen, why = fast_model(setup["model"], setup["weights"], SECTION, Info())
    assert chosen is setup["model"] and "on a GPU" in why
