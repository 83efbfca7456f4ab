"""Weights: zoo names, resolving, safe .pdparams reading, saving and applying with reports."""
import collections
import logging
import os
import pickle

import numpy as np
import paddle
import pytest

from paddleseg_unet.models import UNet
from paddleseg_unet.utils import weights as W

ZOO_TABLE = [  # zoo name, ds, res, iters (compat reference)
    ("unet_cityscapes_1024x512_160k", "cityscapes", "1024x512", "160k"),
    ("unet_stare_128x128_40k", "stare", "128x128", "40k"),
    ("unet_drive_128x128_40k", "drive", "128x128", "40k"),
    ("unet_chasedb1_128x128_40k", "chasedb1", "128x128", "40k"),
    ("unet_hrf_256x256_40k", "hrf", "256x256", "40k"),
]


@pytest.fixture
def log_capture(caplog):
    """caplog sees the package logger even though it does not propagate to the root."""
    W.logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger=W.logger.name):
        yield caplog
    W.logger.removeHandler(caplog.handler)


def tiny_unet(seed, num_classes=2):
    paddle.seed(seed)
    return UNet(num_classes=num_classes, base_channels=2)


def test_model_zoo_urls():
    expected = {
        name: f"https://bj.bcebos.com/paddleseg/dygraph/{ds}/unet_{ds}_{res}_{iters}/model.pdparams"
        for name, ds, res, iters in ZOO_TABLE
    }
    assert W.MODEL_ZOO == expected


# ---------------------------------------------------------------- resolving

@pytest.fixture
def fake_download(monkeypatch):
    """Records what would be downloaded instead of using the network."""
    calls = []

    def cached_download(url, cache_dir=None, filename=None):
        calls.append((url, filename))
        return f"/cache/{filename or 'from-url'}"

    monkeypatch.setattr("paddleseg_unet.utils.download.cached_download", cached_download)
    return calls


def test_resolve_local_file_and_directory(tmp_path, fake_download):
    path = tmp_path / "model.pdparams"
    path.write_bytes(b"x")
    assert W.resolve_weights(str(path)) == str(path)
    assert W.resolve_weights(str(tmp_path)) == str(path)
    assert fake_download == []


def test_resolve_zoo_name_and_urls(fake_download):
    drive_url = W.MODEL_ZOO["unet_drive_128x128_40k"]
    assert W.resolve_weights("unet_drive_128x128_40k") == "/cache/unet_drive_128x128_40k.pdparams"
    assert W.resolve_weights(drive_url) == "/cache/unet_drive_128x128_40k.pdparams"
    assert fake_download == [(drive_url, "unet_drive_128x128_40k.pdparams")] * 2
    # Other URLs: all checkpoints are model.pdparams, so cache names must still differ.
    first = W.resolve_weights("https://example.org/run1/model.pdparams")
    second = W.resolve_weights("https://example.org/run2/model.pdparams")
    assert first != second
    for path in (first, second):
        assert os.path.basename(path).startswith("model-") and path.endswith(".pdparams")
    assert [url for url, _ in fake_download[2:]] == ["https://example.org/run1/model.pdparams",
                                                     "https://example.org/run2/model.pdparams"]


def test_zoo_name_hits_the_real_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(tmp_path))
    cached = tmp_path / "weights" / "unet_hrf_256x256_40k.pdparams"
    cached.parent.mkdir()
    cached.write_bytes(b"cached")  # a cache hit needs no network
    assert W.resolve_weights("unet_hrf_256x256_40k") == str(cached)


def test_resolve_unknown_names_path_and_suggests(tmp_path, fake_download):
    missing = str(tmp_path / "nope.pdparams")
    with pytest.raises(W.WeightsError, match="nope.pdparams") as err:
        W.resolve_weights(missing)
    assert "unet_hrf_256x256_40k" in str(err.value)  # zoo names listed
    with pytest.raises(W.WeightsError, match="Did you mean 'unet_stare_128x128_40k'"):
        W.resolve_weights("unet_stare_128x128")
    with pytest.raises(W.WeightsError, match="no model.pdparams"):
        W.resolve_weights(str(tmp_path))
    assert fake_download == []


# ---------------------------------------------------------------- reading

def test_paddle_saved_state_dict_loads(tmp_path):
    layer = paddle.nn.Sequential(paddle.nn.Conv2D(2, 3, 3), paddle.nn.BatchNorm2D(3))
    path = str(tmp_path / "sd.pdparams")
    paddle.save(layer.state_dict(), path)
    with open(path, "rb") as f:  # the file really carries the bookkeeping key
        assert W.BOOKKEEPING_KEY in pickle.load(f)
    state = W.load_pdparams(path)
    assert set(state) == set(layer.state_dict())
    for key, tensor in layer.state_dict().items():
        assert state[key].dtype == np.float32
        np.testing.assert_array_equal(state[key], tensor.numpy())


@pytest.mark.parametrize("protocol", [2, 4])
def test_paddle_saved_numpy_dict_with_bookkeeping_loads(tmp_path, protocol):
    rng = np.random.default_rng(0)
    arrays = {"a.weight": rng.normal(size=(4, 3)).astype("float32"),
              "b._mean": np.arange(5, dtype="float32")}
    path = str(tmp_path / "np.pdparams")
    paddle.save({**arrays, W.BOOKKEEPING_KEY: {"a.weight": "linear_0.w_0"}}, path,
                protocol=protocol)
    state = W.load_pdparams(path)
    assert set(state) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(state[key], arrays[key])


def test_numpy1_spelling_and_ordered_dict_load(tmp_path):
    arrays = collections.OrderedDict(w=np.linspace(0, 1, 6, dtype="float32").reshape(2, 3))
    data = pickle.dumps(arrays, protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.pdparams"  # as numpy 1.x writes it
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(W.load_pdparams(str(path))["w"], arrays["w"])


class Gadget:
    """A custom class: refused even though harmless."""


class RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_code_execution_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"w": np.zeros(2, "float32"), "x": RunsCommand(marker)}, f, protocol=4)
    with pytest.raises(W.UnsafeWeightsError, match=r"'(posix|nt)\.system'") as err:
        W.load_pdparams(str(path))
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [{"w": Gadget()}, {"w": np.array([1, "a"], dtype=object)},
                                     [np.zeros(2)], {3: np.zeros(2)}])
def test_refuses_anything_but_dict_of_numeric_arrays(tmp_path, payload):
    path = tmp_path / "odd.pdparams"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(W.WeightsError, match="odd.pdparams"):
        W.load_pdparams(str(path))


@pytest.mark.parametrize("keep", [0, 0.5])
def test_truncated_file_is_a_clear_error(tmp_path, keep):
    path = str(tmp_path / "cut.pdparams")
    W.save_pdparams({"w": np.ones((50, 50), "float32")}, path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep)])
    with pytest.raises(W.WeightsError, match="truncated or corrupt.*re-download") as err:
        W.load_pdparams(path)
    assert path in str(err.value)


@pytest.mark.parametrize("content", [b"not weights\n", b"\x00" * 10])
def test_a_file_that_is_no_pickle_at_all_is_named_as_such(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(W.WeightsError) as err:
        W.load_pdparams(str(path))
    assert str(err.value) == (
        f"{path} is not a Paddle weights file (.pdparams): it does not start with a pickle "
        "header. Pass the .pdparams file that paddle.save or tools/train.py wrote "
        "(save_dir/iter_N/model.pdparams), a URL or a model-zoo name")


# ---------------------------------------------------------------- writing

def test_save_is_read_by_paddle_load_and_is_float32(tmp_path):
    model = tiny_unet(0)
    state = dict(model.state_dict())
    state["extra.double"] = np.arange(3, dtype=np.float64)
    state[W.BOOKKEEPING_KEY] = {"x": "y"}
    path = str(tmp_path / "sub" / "model.pdparams")
    W.save_pdparams(state, path)
    W.save_pdparams(state, path)  # overwriting is fine
    assert os.listdir(tmp_path / "sub") == ["model.pdparams"]  # no temp files left behind
    loaded = paddle.load(path, return_numpy=True)
    assert len(loaded) == 113 and W.BOOKKEEPING_KEY not in loaded
    assert "cls.weight" in loaded and "conv.weight" in loaded
    assert loaded["extra.double"].dtype == np.float32
    for key, tensor in model.state_dict().items():
        np.testing.assert_array_equal(loaded[key], tensor.numpy())


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    source = tiny_unet(0)
    source.train()
    source(paddle.rand([2, 3, 16, 16]))  # move BN running statistics away from 0/1
    source.eval()
    path = str(tmp_path / "m.pdparams")
    W.save_pdparams(source.state_dict(), path)
    target = tiny_unet(1)
    report = W.load_weights(target, path)
    assert (report.loaded, report.total, report.complete) == (112, 112, True)
    target.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(1, 3, 21, 17)).astype("float32"))
    np.testing.assert_array_equal(target(x)[0].numpy(), source(x)[0].numpy())


# ---------------------------------------------------------------- applying

def numpy_state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_report_lists_missing_unexpected_and_mismatched(log_capture):
    donor = numpy_state(tiny_unet(0))
    model = tiny_unet(1)
    before = numpy_state(model)
    state = dict(donor)
    del state["encode.double_conv.0._conv.bias"]
    state["encode.double_conv.1._conv.weight"] = np.zeros((2, 2, 1, 1), "float32")
    state["aux_head.weight"] = np.zeros(3, "float32")

    with pytest.raises(W.WeightsError) as err:
        W.load_state_dict(model, state, strict=True, source="donor.pdparams")
    message = str(err.value)
    assert "missing: encode.double_conv.0._conv.bias" in message
    assert "encode.double_conv.1._conv.weight: file [2, 2, 1, 1] vs model [2, 2, 3, 3]" in message
    assert message.endswith("skip these keys with tools/val.py --allow_partial (strict=False "
                            "in Python).")
    for key, value in numpy_state(model).items():  # strict failure changes nothing
        np.testing.assert_array_equal(value, before[key])

    report = W.load_state_dict(model, state, strict=False, source="donor.pdparams")
    assert report.missing == ["encode.double_conv.0._conv.bias"]
    assert report.unexpected == ["aux_head.weight"]
    assert report.mismatched == [("encode.double_conv.1._conv.weight", (2, 2, 1, 1), (2, 2, 3, 3))]
    assert (report.loaded, report.total) == (110, 112)
    assert "Loaded 110/112 parameters from donor.pdparams" in log_capture.text
    after = numpy_state(model)
    for key in after:
        want = before[key] if key in ("encode.double_conv.0._conv.bias",
                                      "encode.double_conv.1._conv.weight") else donor[key]
        np.testing.assert_array_equal(after[key], want, key)


def test_complete_load_logs_summary(log_capture):
    W.load_state_dict(tiny_unet(1), numpy_state(tiny_unet(0)), strict=True, source="X")
    assert "Loaded 112/112 parameters from X" in log_capture.text


def test_head_alias_needs_only_one_name_but_names_must_agree():
    donor = numpy_state(tiny_unet(0))
    model = tiny_unet(1)
    only_cls = {k: v for k, v in donor.items() if not k.startswith("conv.")}
    report = W.load_state_dict(model, only_cls, strict=True)
    assert report.loaded == 112 and report.complete
    np.testing.assert_array_equal(model.conv.weight.numpy(), donor["cls.weight"])
    conflicting = dict(donor, **{"conv.bias": donor["cls.bias"] + 1})
    with pytest.raises(W.WeightsError, match="'cls.bias' and 'conv.bias'"):
        W.load_state_dict(model, conflicting, strict=False)


def test_nothing_matching_is_an_error_even_when_lenient():
    with pytest.raises(W.WeightsError, match="none of the model's 112 keys"):
        W.load_state_dict(tiny_unet(0), {"backbone.x": np.zeros(1, "float32")}, strict=False)
