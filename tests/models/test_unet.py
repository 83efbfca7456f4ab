"""UNet: PaddleSeg key names/shapes, parameter counts, init, and a numpy forward reference."""
import math

import numpy as np
import paddle
import pytest

from paddleseg_unet.cvlibs.registry import MODELS, build
from paddleseg_unet.models import UNet
from paddleseg_unet.utils.weights import save_pdparams

# The compat reference's table, written out by hand: (prefix, Ci, Co); "in" = in_channels.
CBR_TABLE = [
    ("encode.double_conv.0", "in", 64), ("encode.double_conv.1", 64, 64),
    ("encode.down_sample_list.0.1", 64, 128), ("encode.down_sample_list.0.2", 128, 128),
    ("encode.down_sample_list.1.1", 128, 256), ("encode.down_sample_list.1.2", 256, 256),
    ("encode.down_sample_list.2.1", 256, 512), ("encode.down_sample_list.2.2", 512, 512),
    ("encode.down_sample_list.3.1", 512, 512), ("encode.down_sample_list.3.2", 512, 512),
    ("decode.up_sample_list.0.double_conv.0", 1024, 256),
    ("decode.up_sample_list.0.double_conv.1", 256, 256),
    ("decode.up_sample_list.1.double_conv.0", 512, 128),
    ("decode.up_sample_list.1.double_conv.1", 128, 128),
    ("decode.up_sample_list.2.double_conv.0", 256, 64),
    ("decode.up_sample_list.2.double_conv.1", 64, 64),
    ("decode.up_sample_list.3.double_conv.0", 128, 64),
    ("decode.up_sample_list.3.double_conv.1", 64, 64),
]
DECONV_DOUBLE_CONV_IN = [640, 320, 160, 96]
DECONV_SHAPES = [(512, 128), (256, 64), (128, 32), (64, 32)]  # Conv2DTranspose(Cin, Cout//2)


def expected_state_shapes(num_classes, in_channels=3, base=64, deconv=False):
    """Ordered (key, shape) list derived from the table, widths scaled by base/64."""
    def s(c):
        return c * base // 64

    out = []
    for prefix, ci, co in CBR_TABLE:
        ci = in_channels if ci == "in" else s(ci)
        if deconv and prefix.startswith("decode"):
            i = int(prefix.split(".")[2])
            if prefix.endswith("double_conv.0"):
                ci = DECONV_DOUBLE_CONV_IN[i] * base // 64
                cin, cout = DECONV_SHAPES[i]
                out += [(f"decode.up_sample_list.{i}.deconv.weight", [s(cin), s(cout), 2, 2]),
                        (f"decode.up_sample_list.{i}.deconv.bias", [s(cout)])]
        co = s(co)
        out += [(f"{prefix}._conv.weight", [co, ci, 3, 3]), (f"{prefix}._conv.bias", [co])]
        out += [(f"{prefix}._batch_norm.{n}", [co]) for n in ("weight", "bias", "_mean", "_variance")]
    for head in ("cls", "conv"):
        out += [(f"{head}.weight", [num_classes, s(64), 3, 3]), (f"{head}.bias", [num_classes])]
    return out


def model_shapes(model):
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def trainable_count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


def test_full_width_keys_counts_and_init():
    paddle.seed(0)
    model = UNet(num_classes=2)
    expected = expected_state_shapes(2)
    assert len(expected) == 112
    assert model_shapes(model) == expected
    # trainable = all but BN running stats, each tensor once (cls and conv are one layer)
    by_key = dict(expected)
    independent = sum(int(np.prod(shape)) for k, shape in expected
                      if not k.startswith("conv.") and not k.endswith(("_mean", "_variance")))
    assert trainable_count(model) == independent == 13_396_418
    assert model.cls is model.conv

    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    w = sd["encode.down_sample_list.2.1._conv.weight"]  # 1.18M draws, Ci = 256
    assert abs(w.mean()) < 1e-3
    assert w.std() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.01)
    assert sd["cls.weight"].std() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.15)
    for key, value in sd.items():
        if key.endswith(("_conv.bias", "_batch_norm.bias", "_mean")) or key.endswith("cls.bias"):
            assert not value.any(), key
        if key.endswith(("_batch_norm.weight", "_variance")):
            assert (value == 1).all(), key
    assert by_key["cls.weight"] == [2, 64, 3, 3]
    bn = model.encode.double_conv[0]._batch_norm
    assert bn._epsilon == 1e-5 and bn._momentum == 0.9


def test_nineteen_class_parameter_count():
    assert trainable_count(UNet(num_classes=19)) == 13_406_227


def test_deconv_keys_full_width():
    model = UNet(num_classes=2, use_deconv=True)
    assert model_shapes(model) == expected_state_shapes(2, deconv=True)
    assert model.state_dict()["decode.up_sample_list.0.double_conv.0._conv.weight"].shape == \
        [256, 640, 3, 3]


@pytest.mark.parametrize("deconv", [False, True])
def test_base_channels_scale_every_width(deconv):
    model = UNet(num_classes=3, in_channels=1, base_channels=4, use_deconv=deconv)
    assert model_shapes(model) == expected_state_shapes(3, in_channels=1, base=4, deconv=deconv)


@pytest.mark.parametrize("deconv", [False, True])
def test_odd_input_size_gives_input_resolution(deconv):
    model = UNet(num_classes=3, base_channels=4, use_deconv=deconv)
    model.eval()
    out = model(paddle.rand([1, 3, 37, 45]))
    assert isinstance(out, list) and len(out) == 1
    assert list(out[0].shape) == [1, 3, 37, 45]


def test_bad_inputs_and_arguments():
    model = UNet(num_classes=2, base_channels=2)
    with pytest.raises(ValueError, match="at least 16x16"):
        model(paddle.rand([1, 3, 15, 40]))
    with pytest.raises(ValueError, match="in_channels=3 but got an input with 1 channels"):
        model(paddle.rand([1, 1, 16, 16]))
    with pytest.raises(ValueError, match="num_classes"):
        UNet(num_classes=0)
    with pytest.raises(ValueError, match="base_channels"):
        UNet(num_classes=2, base_channels=1, use_deconv=True)


def test_registered_and_buildable_from_config():
    assert MODELS.get("UNet") is UNet
    model = build({"type": "UNet", "num_classes": 2, "base_channels": 2}, MODELS)
    assert isinstance(model, UNet) and model.num_classes == 2


# ---------------------------------------------------------------- numpy reference forward

def np_conv3x3(x, w, b):
    c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, dy, dx], xp[:, dy:dy + h, dx:dx + wd])
    return out + b[:, None, None]


def np_cbr(x, sd, p):
    y = np_conv3x3(x, sd[f"{p}._conv.weight"], sd[f"{p}._conv.bias"])
    g, beta = sd[f"{p}._batch_norm.weight"], sd[f"{p}._batch_norm.bias"]
    mean, var = sd[f"{p}._batch_norm._mean"], sd[f"{p}._batch_norm._variance"]
    y = (y - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * g[:, None, None] \
        + beta[:, None, None]
    return np.maximum(y, 0)


def np_maxpool(x):
    c, h, w = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def np_resize_axis(x, out_len, axis, align_corners):
    in_len = x.shape[axis]
    dst = np.arange(out_len, dtype=np.float64)
    if align_corners:
        src = dst * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(dst)
    else:  # half-pixel centres, clamped at the top/left border
        src = np.maximum((dst + 0.5) * in_len / out_len - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(int), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    frac = src - i0
    shape = [1] * x.ndim
    shape[axis] = out_len
    frac = frac.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - frac) + np.take(x, i1, axis=axis) * frac


def np_bilinear(x, h, w, align_corners):
    return np_resize_axis(np_resize_axis(x, h, 1, align_corners), w, 2, align_corners)


def np_deconv2x2(x, w, b):
    c, h, wd = x.shape
    out = np.einsum("chw,coyx->ohywx", x, w).reshape(w.shape[1], 2 * h, 2 * wd)
    return out + b[:, None, None]


def np_unet(x, sd, align_corners, deconv):
    x = np_cbr(np_cbr(x, sd, "encode.double_conv.0"), sd, "encode.double_conv.1")
    skips = []
    for i in range(4):
        skips.append(x)
        x = np_maxpool(x)
        x = np_cbr(np_cbr(x, sd, f"encode.down_sample_list.{i}.1"), sd,
                   f"encode.down_sample_list.{i}.2")
    for i, skip in enumerate(reversed(skips)):
        p = f"decode.up_sample_list.{i}"
        if deconv:
            x = np_deconv2x2(x, sd[f"{p}.deconv.weight"], sd[f"{p}.deconv.bias"])
        if x.shape[1:] != skip.shape[1:]:
            x = np_bilinear(x, skip.shape[1], skip.shape[2], align_corners)
        x = np.concatenate([x, skip], axis=0)
        x = np_cbr(np_cbr(x, sd, f"{p}.double_conv.0"), sd, f"{p}.double_conv.1")
    return np_conv3x3(x, sd["cls.weight"], sd["cls.bias"])


@pytest.mark.parametrize("align_corners,deconv", [(False, False), (True, False), (False, True)])
def test_forward_matches_numpy_reference(align_corners, deconv):
    paddle.seed(1)
    rng = np.random.default_rng(0)
    model = UNet(num_classes=2, base_channels=2, align_corners=align_corners,
                 use_deconv=deconv)
    # Non-trivial BN statistics so eval-mode normalisation is actually exercised.
    for key, tensor in model.state_dict().items():
        if key.endswith(("_batch_norm.weight", "_mean")):
            tensor.set_value(rng.normal(0.5, 0.5, tensor.shape).astype("float32"))
        elif key.endswith("_batch_norm.bias"):
            tensor.set_value(rng.normal(0.0, 0.3, tensor.shape).astype("float32"))
        elif key.endswith("_variance"):
            tensor.set_value(rng.uniform(0.5, 2.0, tensor.shape).astype("float32"))
    model.eval()
    x = rng.normal(size=(1, 3, 19, 23)).astype("float32")
    got = model(paddle.to_tensor(x))[0].numpy()[0]
    sd = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    want = np_unet(x[0].astype(np.float64), sd, align_corners, deconv)
    assert got.shape == want.shape == (2, 19, 23)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ---------------------------------------------------------------- pretrained

def test_pretrained_path_loads_and_skips_other_head(tmp_path):
    paddle.seed(2)
    source = UNet(num_classes=2, base_channels=2)
    path = str(tmp_path / "w.pdparams")
    save_pdparams(source.state_dict(), path)
    paddle.seed(3)
    same = UNet(num_classes=2, base_channels=2, pretrained=path)
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(same.state_dict()[key].numpy(), value.numpy(), key)
    other = UNet(num_classes=5, base_channels=2, pretrained=path)  # fine-tuning case
    enc = "encode.double_conv.0._conv.weight"
    np.testing.assert_array_equal(other.state_dict()[enc].numpy(), source.state_dict()[enc].numpy())
    assert other.state_dict()["cls.weight"].shape == [5, 2, 3, 3]


def _folded_and_plain_pair(use_global_stats=None):
    """Our ConvBNReLU and Paddle's own Conv2D + BatchNorm2D holding the same (non-trivial) values."""
    from paddleseg_unet.models.unet import ConvBNReLU

    paddle.seed(3)
    ours = ConvBNReLU(3, 5)
    ref_conv = paddle.nn.Conv2D(3, 5, 3, padding=1)
    ref_bn = paddle.nn.BatchNorm2D(5, momentum=0.9, epsilon=1e-5, use_global_stats=use_global_stats)
    ours._batch_norm._use_global_stats = use_global_stats
    rng = np.random.default_rng(0)
    values = {
        "_conv.weight": rng.normal(0, 0.3, (5, 3, 3, 3)), "_conv.bias": rng.normal(2.0, 1.0, 5),
        "_batch_norm.weight": rng.uniform(0.5, 1.5, 5), "_batch_norm.bias": rng.normal(0, 0.5, 5),
        "_batch_norm._mean": rng.normal(1.0, 1.0, 5), "_batch_norm._variance": rng.uniform(0.5, 2, 5),
    }
    ours.set_state_dict({k: paddle.to_tensor(v.astype(np.float32)) for k, v in values.items()})
    ref_conv.set_state_dict({k.split(".")[1]: paddle.to_tensor(v.astype(np.float32))
                             for k, v in values.items() if k.startswith("_conv")})
    ref_bn.set_state_dict({k.split(".")[1]: paddle.to_tensor(v.astype(np.float32))
                           for k, v in values.items() if k.startswith("_batch_norm")})

    def plain(x):
        return paddle.nn.functional.relu(ref_bn(ref_conv(x)))

    ref_params = {"_conv.weight": ref_conv.weight, "_conv.bias": ref_conv.bias,
                  "_batch_norm.weight": ref_bn.weight, "_batch_norm.bias": ref_bn.bias}
    return ours, plain, ref_params, (ref_conv, ref_bn)


@pytest.mark.parametrize("mode", ["train", "eval", "train_global_stats"])
def test_conv_bias_folding_equals_plain_conv_then_batchnorm(mode):
    """Folding the conv bias into BN changes neither outputs, gradients nor running statistics
    (reference: Paddle's own Conv2D with bias followed by BatchNorm2D)."""
    ours, plain, ref_params, ref_layers = _folded_and_plain_pair(
        use_global_stats=True if mode == "train_global_stats" else None)
    training = mode != "eval"
    for layer in (ours, *ref_layers):
        layer.train() if training else layer.eval()
    rng = np.random.default_rng(1)
    for _ in range(3):  # running statistics evolve over steps
        x_np = rng.normal(0, 1, (2, 3, 9, 11)).astype(np.float32)
        weight_np = rng.normal(0, 1, (2, 5, 9, 11)).astype(np.float32)
        outs, grads = [], []
        for fn, params in ((ours, dict(ours.named_parameters())), (plain, ref_params)):
            x = paddle.to_tensor(x_np, stop_gradient=False)
            out = fn(x)
            (out * paddle.to_tensor(weight_np)).sum().backward()
            outs.append(out.numpy())
            grads.append({"x": x.grad.numpy(), **{k: (np.zeros(p.shape, np.float32) if p.grad is None
                                                      else p.grad.numpy()) for k, p in params.items()}})
            for p in params.values():
                p.clear_gradient()
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        for key in grads[1]:
            # with batch statistics the bias gradient is zero in exact arithmetic: ours gives
            # exactly 0, the plain layers float noise around it
            np.testing.assert_allclose(grads[0][key], grads[1][key], rtol=1e-4, atol=2e-4, err_msg=key)
        bn = ours._batch_norm
        np.testing.assert_allclose(bn._mean.numpy(), ref_layers[1]._mean.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn._variance.numpy(), ref_layers[1]._variance.numpy(), rtol=1e-5, atol=1e-5)
    if mode == "eval":
        assert np.abs(grads[1]["_conv.bias"]).max() > 1e-2  # the bias matters with running stats


@pytest.mark.parametrize("training", [True, False])
def test_hooks_on_the_block_layers_fire_and_change_nothing(training):
    """The folded fast path never calls ``_conv``/``_batch_norm``; a block whose layers carry
    a forward hook takes the plain path, so the hooks fire, with the same output."""
    paddle.seed(3)
    model = UNet(num_classes=2, base_channels=2)
    model.train() if training else model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).normal(0, 1, (2, 3, 32, 32)), "float32")
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    expected = model(x)[0].numpy()
    model.set_state_dict(state)  # training updated the running statistics: start again
    seen = []
    blocks = [layer for layer in model.sublayers() if type(layer).__name__ == "ConvBNReLU"]
    handles = [layer.register_forward_post_hook(lambda layer, i, o: seen.append(type(layer)))
               for block in blocks for layer in (block._conv, block._batch_norm, block._relu)]
    got = model(x)[0].numpy()
    for handle in handles:
        handle.remove()
    assert len(seen) == 3 * len(blocks) == 3 * 18
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
