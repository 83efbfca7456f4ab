"""The model analyser against the UNet's closed form: every 3x3 conv costs
9*Cin*Cout*h*w MACs (2 FLOPs each, bias adds not counted), BatchNorm one MAC per output
element, ReLU one FLOP per element, a 2x2 max pool three comparisons per output element;
parameters against PaddleSeg's published count."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddleseg_unet.core.analyze import (BACKEND_KINDS, analyze_model, count_layers,
                                         count_parameters, format_analysis, measure_latency)
from paddleseg_unet.models import UNet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "unet", "unet_drive_128x128_40k.yml")


def unet_blocks(b, in_channels, num_classes, height, width, use_deconv=False):
    """(conv layer name, Cin, Cout, h, w) of every 3x3 conv, the pools' (C, h, w) outputs and
    the transposed convs' (name, Cin, Cout, h_in, w_in), written out by hand."""
    sizes = [(height, width)]
    for _ in range(4):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    widths = [b, 2 * b, 4 * b, 8 * b, 8 * b]
    convs = [("encode.double_conv.0", in_channels, b, *sizes[0]),
             ("encode.double_conv.1", b, b, *sizes[0])]
    pools = []
    for i in range(4):
        pools.append((widths[i], *sizes[i + 1]))
        convs += [(f"encode.down_sample_list.{i}.1", widths[i], widths[i + 1], *sizes[i + 1]),
                  (f"encode.down_sample_list.{i}.2", widths[i + 1], widths[i + 1],
                   *sizes[i + 1])]
    deconvs = []
    # decoder step i: x (the bottleneck, then the previous step's output) at sizes[4 - i];
    # skip widths[3 - i] at sizes[3 - i]; output widths[2 - i] (b for the last two steps)
    cout = widths[4]
    for i in range(4):
        cx, cskip = cout, widths[3 - i]
        cout = widths[max(2 - i, 0)]
        if use_deconv:
            deconvs.append((f"decode.up_sample_list.{i}.deconv", cx, cout // 2, *sizes[4 - i]))
            cin = cskip + cout // 2
        else:
            cin = cx + cskip
        name = f"decode.up_sample_list.{i}.double_conv"
        convs += [(f"{name}.0", cin, cout, *sizes[3 - i]), (f"{name}.1", cout, cout, *sizes[3 - i])]
    head = ("cls", b, num_classes, *sizes[0])
    return convs, pools, deconvs, head


def closed_form(b, in_channels, num_classes, height, width, use_deconv=False):
    convs, pools, deconvs, head = unet_blocks(b, in_channels, num_classes, height, width,
                                              use_deconv)
    macs = {f"{n}._conv": 9 * ci * co * h * w for n, ci, co, h, w in convs}
    macs["cls"] = 9 * head[1] * head[2] * head[3] * head[4]
    macs.update({n: ci * h * w * co * 4 for n, ci, co, h, w in deconvs})
    bn = sum(co * h * w for _, _, co, h, w in convs)  # BN MACs = its output elements
    relu = bn
    pool_out = sum(c * h * w for c, h, w in pools)
    deconv_out = sum(co * 4 * h * w for _, _, co, h, w in deconvs)
    total_macs = sum(macs.values()) + bn
    total_flops = 2 * total_macs + relu + 3 * pool_out
    activations = 4 * (3 * bn + pool_out + deconv_out + head[2] * head[3] * head[4])
    trainable = sum(9 * ci * co + co + 2 * co for _, ci, co, _, _ in convs)
    trainable += 9 * head[1] * head[2] + head[2]
    trainable += sum(ci * co * 4 + co for _, ci, co, _, _ in deconvs)
    running = sum(2 * co for _, _, co, _, _ in convs)
    return dict(conv_macs=macs, macs=total_macs, flops=total_flops, activations=activations,
                trainable=trainable, total=trainable + running)


@pytest.mark.parametrize("height,width", [(32, 32), (50, 36)])
def test_counts_equal_the_closed_form(height, width):
    paddle.seed(0)
    model = UNet(num_classes=2, base_channels=4)
    expected = closed_form(4, 3, 2, height, width)
    analysis = analyze_model(model, [1, 3, height, width], 2, backends=())
    by_name = {row.name: row for row in analysis.layers}
    for name, macs in expected["conv_macs"].items():
        assert by_name[name].macs == macs, name
        assert by_name[name].flops == 2 * macs, name
    assert analysis.macs == expected["macs"]
    assert analysis.flops == expected["flops"]
    assert analysis.activation_bytes == expected["activations"]
    assert (analysis.trainable_params, analysis.total_params) == (expected["trainable"],
                                                                  expected["total"])
    assert analysis.not_counted == [] and analysis.latency == {}
    assert by_name["cls"].output_shape == [1, 2, height, width]


def test_batch_scales_macs_not_params():
    model = UNet(num_classes=2, base_channels=4)
    one = analyze_model(model, [1, 3, 32, 32], 2, backends=())
    three = analyze_model(model, [3, 3, 32, 32], 2, backends=())
    assert three.macs == 3 * one.macs and three.activation_bytes == 3 * one.activation_bytes
    assert three.trainable_params == one.trainable_params


def test_transposed_conv_counts():
    model = UNet(num_classes=3, base_channels=4, use_deconv=True)
    expected = closed_form(4, 3, 3, 32, 48, use_deconv=True)
    analysis = analyze_model(model, [1, 3, 32, 48], 3, backends=())
    by_name = {row.name: row for row in analysis.layers}
    for name, macs in expected["conv_macs"].items():
        assert by_name[name].macs == macs, name
    assert analysis.macs == expected["macs"] and analysis.flops == expected["flops"]
    assert analysis.trainable_params == expected["trainable"]


@pytest.mark.parametrize("num_classes,published", [(2, 13_396_418), (19, 13_406_227)])
def test_full_width_parameters_match_paddleseg(num_classes, published):
    """No forward pass: only the parameter count of the 64-wide model."""
    trainable, total = count_parameters(UNet(num_classes=num_classes))
    assert trainable == published
    assert trainable == closed_form(64, 3, num_classes, 16, 16)["trainable"]
    assert total == closed_form(64, 3, num_classes, 16, 16)["total"]


def test_counting_leaves_the_model_as_it_was():
    paddle.seed(1)
    model = UNet(num_classes=2, base_channels=4)
    model.train()
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)), "float32")
    count_layers(model, [1, 3, 32, 32])
    assert model.training
    assert all(not layer._forward_post_hooks for layer in model.sublayers())
    model.eval()
    before = model(x)[0].numpy()
    count_layers(model, [1, 3, 32, 32])
    np.testing.assert_array_equal(model(x)[0].numpy(), before)


def test_latency_of_every_backend():
    model = UNet(num_classes=2, base_channels=4)
    latency = measure_latency(model, [1, 3, 32, 32], 2, warmup=1, repeats=2, num_threads=1)
    assert list(latency) == list(BACKEND_KINDS)
    for kind, lat in latency.items():
        assert lat.error is None, (kind, lat.error)
        assert 0 < lat.min <= lat.median <= lat.max and lat.runs == 2


def test_format_lists_every_layer_and_the_totals():
    model = UNet(num_classes=2, base_channels=4)
    analysis = analyze_model(model, [1, 3, 32, 32], 2, backends=())
    text = format_analysis(analysis)
    for row in analysis.layers:
        assert row.name in text
    assert f"MACs: {analysis.macs:,}" in text and f"{analysis.trainable_params:,} trainable" in text


def _run_tool(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "analyze_model.py"),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_tool_writes_json_equal_to_the_closed_form(tmp_path):
    out = tmp_path / "sub" / "analysis.json"
    proc = _run_tool("--config", CONFIG, "--opts", "model.base_channels=4", "--input_size",
                     "36", "50", "--backends", "paddle", "--repeats", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    expected = closed_form(4, 3, 2, 50, 36)
    assert data["input_shape"] == [1, 3, 50, 36]
    assert (data["macs"], data["flops"], data["activation_bytes"]) == (
        expected["macs"], expected["flops"], expected["activations"])
    assert data["trainable_params"] == expected["trainable"]
    assert data["latency_seconds"]["paddle"]["median"] > 0
    assert list(data["latency_seconds"]) == ["paddle"]
    assert f"MACs: {expected['macs']:,}" in proc.stdout


def test_tool_refuses_an_unwritable_json_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = _run_tool("--config", CONFIG, "--json", str(blocker / "a.json"), "--no_latency")
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--json" in err[0] and "Traceback" not in proc.stderr


def test_tool_backend_choices_are_the_library_ones():
    from paddleseg_unet.apis.commands import analyze

    assert tuple(analyze.BACKENDS) == BACKEND_KINDS


@pytest.mark.skipif(paddle.__version__ != "3.3.1", reason="checks Paddle 3.3.1 only")
def test_paddle_flops_fails_on_paddle_3_3_1():
    """Why the analyser counts with its own hooks (docs/analyze.md says so)."""
    with pytest.raises(TypeError, match="0-dimensional"):
        paddle.flops(UNet(num_classes=2, base_channels=4), [1, 3, 32, 32], print_detail=False)


@pytest.mark.parametrize("flags,expected", [
    (["--input_size", "8", "8"], "at least 16x16"),
    (["--input_shape", "1", "4", "32", "32"], "4 channels"),
    (["--repeats", "0"], "repeats must be >= 1"),
])
def test_tool_bad_input_gives_one_error_line(flags, expected):
    proc = _run_tool("--config", CONFIG, "--opts", "model.base_channels=4", *flags)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expected in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
