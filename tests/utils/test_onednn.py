"""oneDNN convolutions against a numpy reference (forward and all three gradients)."""
import threading

import numpy as np
import paddle
import pytest

from paddleseg_unet.models import UNet
from paddleseg_unet.utils import onednn
from paddleseg_unet.utils.device import current_cpu_threads, set_cpu_threads

pytestmark = pytest.mark.skipif(not onednn.enabled(),
                                reason="Paddle's libdnnl.so.3 is not loadable here")


def reference(x, w, b, g, stride, pad):
    """y = conv(x, w) + b and, for the loss sum(y * g), the gradients: plain numpy loops
    over the kernel taps."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, o, oh, ow))
    gx = np.zeros_like(xp)
    gw = np.zeros(w.shape)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            y += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
            gw[:, :, i, j] = np.einsum("nohw,nchw->oc", g, window)
            gx[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += np.einsum(
                "nohw,oc->nchw", g, w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y, gx[:, :, pad:pad + h, pad:pad + wd], gw, g.sum(axis=(0, 2, 3))


def run(x, w, b, g, stride, pad, x_needs_grad=True):
    xt = paddle.to_tensor(x, stop_gradient=not x_needs_grad)
    wt = paddle.to_tensor(w, stop_gradient=False)
    bt = None if b is None else paddle.to_tensor(b, stop_gradient=False)
    y = onednn.conv2d(xt, wt, bt, stride=stride, padding=pad)
    (y * paddle.to_tensor(g)).sum().backward()
    return y.numpy(), xt.grad, wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def close(actual, expected):
    scale = max(1e-6, float(np.abs(expected).max()))
    assert float(np.abs(actual - expected).max()) / scale < 1e-5


@pytest.mark.parametrize("shape,kernel,stride,pad,bias", [
    ((2, 3, 20, 20), (8, 3, 3, 3), 1, 1, True),     # the UNet's first layer
    ((2, 16, 17, 13), (24, 16, 3, 3), 1, 1, False),  # odd sizes, channels not a multiple of 8
    ((1, 32, 15, 16), (16, 32, 3, 3), 2, 1, True),
    ((3, 5, 9, 9), (7, 5, 1, 1), 1, 0, True),
])
def test_forward_and_gradients_match_numpy(shape, kernel, stride, pad, bias):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(kernel).astype(np.float32)
    b = rng.standard_normal(kernel[0]).astype(np.float32) if bias else None
    out = [(size + 2 * pad - k) // stride + 1 for size, k in zip(shape[2:], kernel[2:])]
    g = rng.standard_normal((shape[0], kernel[0], *out)).astype(np.float32)
    y_ref, gx_ref, gw_ref, gb_ref = reference(x, w, b, g, stride, pad)
    y, gx, gw, gb = run(x, w, b, g, stride, pad)
    close(y, y_ref)
    close(gx.numpy(), gx_ref)
    close(gw, gw_ref)
    if bias:
        close(gb, gb_ref)
    key = (shape, kernel, bias, (pad, pad), (stride, stride), True)
    assert key in onednn._state.plans  # it ran through oneDNN, not Paddle's fallback


def test_input_without_gradient_and_no_grad_inference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 6, 12, 12)).astype(np.float32)
    y_ref, _, gw_ref, _ = reference(x, w, None, g, 1, 1)
    y, gx, gw, _ = run(x, w, None, g, 1, 1, x_needs_grad=False)
    assert gx is None
    close(gw, gw_ref)
    with paddle.no_grad():
        y = onednn.conv2d(paddle.to_tensor(x), paddle.to_tensor(w), padding=1)
    close(y.numpy(), y_ref)
    assert ((2, 4, 12, 12), (6, 4, 3, 3), False, (1, 1), (1, 1), False) in onednn._state.plans


def test_strided_view_input():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    view = paddle.to_tensor(base)[:, ::2]  # every other channel: not contiguous
    y = onednn.conv2d(view, paddle.to_tensor(w), padding=1)
    close(y.numpy(), reference(base[:, ::2], w, None, np.zeros((2, 3, 10, 10)), 1, 1)[0])


def test_evicted_plan_still_serves_its_backward(monkeypatch):
    monkeypatch.setattr(onednn, "MAX_PLANS", 2)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    wt = paddle.to_tensor(w, stop_gradient=False)
    xs = [rng.standard_normal((1, 3, s, s)).astype(np.float32) for s in (8, 9, 10, 11)]
    loss = sum(onednn.conv2d(paddle.to_tensor(x), wt, padding=1).sum() for x in xs)
    assert len(onednn._state.plans) <= 2  # the first shapes were evicted before backward
    loss.backward()
    expected = sum(reference(x, w, None, np.ones((1, 4) + x.shape[2:]), 1, 1)[2] for x in xs)
    close(wt.grad.numpy(), expected)


def test_threads_follow_the_cpu_thread_setting():
    before = current_cpu_threads()
    try:
        set_cpu_threads(1)
        onednn.conv2d(paddle.ones([1, 2, 8, 8]), paddle.ones([2, 2, 3, 3]), padding=1)
        omp = onednn._load()._omp
        if omp is None:
            pytest.skip("no GNU OpenMP runtime loaded")
        assert omp.omp_get_max_threads() == 1
        set_cpu_threads(2)
        onednn.conv2d(paddle.ones([1, 2, 8, 8]), paddle.ones([2, 2, 3, 3]), padding=1)
        assert omp.omp_get_max_threads() == 2
    finally:
        set_cpu_threads(before)


def test_threads_left_alone_when_nothing_set_them(monkeypatch):
    from paddleseg_unet.utils import device

    omp = onednn._load()._omp
    if omp is None:
        pytest.skip("no GNU OpenMP runtime loaded")
    monkeypatch.setattr(device, "_cpu_threads", None)
    before = omp.omp_get_max_threads()
    omp.omp_set_num_threads(3)
    onednn.conv2d(paddle.ones([1, 2, 8, 8]), paddle.ones([2, 2, 3, 3]), padding=1)
    assert omp.omp_get_max_threads() == 3
    omp.omp_set_num_threads(before)


def test_concurrent_threads_get_correct_results():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    inputs = [rng.standard_normal((2, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    results = {}

    def work(i):
        with paddle.no_grad():
            for _ in range(5):
                results[i] = onednn.conv2d(paddle.to_tensor(inputs[i]), paddle.to_tensor(w),
                                           padding=1).numpy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        close(results[i], reference(x, w, None, np.zeros((2, 5, 16, 16)), 1, 1)[0])


def test_switched_off_by_environment_and_outside_eager_cpu_float32(monkeypatch):
    monkeypatch.setenv("PADDLESEG_UNET_ONEDNN", "0")
    assert not onednn.enabled()
    before = dict(onednn._state.plans)
    y = onednn.conv2d(paddle.ones([1, 2, 8, 8]), paddle.ones([2, 2, 3, 3]), padding=1)
    assert float(y[0, 0, 4, 4]) == 18.0 and dict(onednn._state.plans) == before
    monkeypatch.delenv("PADDLESEG_UNET_ONEDNN")
    y = onednn.conv2d(paddle.ones([1, 2, 8, 8], dtype="float64"),
                      paddle.ones([2, 2, 3, 3], dtype="float64"), padding=1)
    assert y.dtype == paddle.float64 and float(y[0, 0, 0, 0]) == 8.0


def test_unet_training_step_matches_paddles_convolution(monkeypatch):
    """Same weights, same batch: loss and every gradient agree with Paddle's own conv."""
    rng = np.random.default_rng(5)
    x = paddle.to_tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    label = paddle.to_tensor(rng.integers(0, 2, (2, 32, 32)))
    paddle.seed(0)
    model = UNet(num_classes=2, base_channels=4)
    results = []
    for switch in ("0", "1"):
        monkeypatch.setenv("PADDLESEG_UNET_ONEDNN", switch)
        model.clear_gradients()
        loss = paddle.nn.functional.cross_entropy(model(x)[0], label, axis=1)
        loss.backward()
        results.append((float(loss), {p.name: p.grad.numpy() for p in model.parameters()
                                      if p.grad is not None}))
    (loss_paddle, grads_paddle), (loss_onednn, grads_onednn) = results
    assert abs(loss_onednn - loss_paddle) < 1e-5 * abs(loss_paddle)
    assert grads_paddle.keys() == grads_onednn.keys() and len(grads_paddle) > 40
    for name, grad in grads_paddle.items():
        scale = max(1e-6, float(np.abs(grad).max()))
        assert float(np.abs(grads_onednn[name] - grad).max()) / scale < 1e-4, name


def test_missing_library_falls_back_to_paddle(monkeypatch, tmp_path):
    messages = []
    monkeypatch.setattr(onednn.logger, "info", messages.append)  # whatever earlier tests set
    monkeypatch.setattr(onednn, "_library", None)
    monkeypatch.setattr(onednn, "_library_failed", False)
    monkeypatch.setattr(onednn, "_library_path", lambda: str(tmp_path / "libdnnl.so.3"))
    assert not onednn.enabled()
    assert len(messages) == 1 and "oneDNN convolutions unavailable" in messages[0]
    y = onednn.conv2d(paddle.ones([1, 2, 8, 8]), paddle.ones([2, 2, 3, 3]), padding=1)
    assert float(y[0, 1, 4, 4]) == 18.0
