"""Parity with PaddleSeg itself (the `paddleseg` package, 2.8), when it is installed:
the same weights load both ways and give the same logits, and PaddleSeg's metric functions
give the same numbers as our accumulator. Skipped when paddleseg is not importable."""
import os

import numpy as np
import paddle
import pytest

paddleseg_models = pytest.importorskip("paddleseg.models", reason="paddleseg not installed")
paddleseg_metrics = pytest.importorskip("paddleseg.utils.metrics")

from paddleseg_unet.core.metrics import SegMetricAccumulator  # noqa: E402
from paddleseg_unet.models import UNet  # noqa: E402
from paddleseg_unet.utils.weights import load_pdparams, load_state_dict, save_pdparams  # noqa: E402


@pytest.mark.parametrize("use_deconv", [False, True])
def test_same_state_dict_keys_and_shapes(use_deconv):
    theirs = paddleseg_models.UNet(num_classes=2, use_deconv=use_deconv).state_dict()
    ours = UNet(num_classes=2, use_deconv=use_deconv).state_dict()
    assert list(ours) == list(theirs)
    assert all(list(ours[k].shape) == list(theirs[k].shape) for k in ours)


def test_weights_load_both_ways_with_identical_logits(tmp_path):
    paddle.seed(7)
    theirs = paddleseg_models.UNet(num_classes=2)
    theirs.eval()
    # Give BN statistics non-default values so they matter.
    for name, value in theirs.state_dict().items():
        if name.endswith(("_mean", "_variance")):
            value.set_value(paddle.rand(value.shape) + 0.5)
    path = str(tmp_path / "theirs.pdparams")
    paddle.save(theirs.state_dict(), path)  # what PaddleSeg publishes
    ours = UNet(num_classes=2)
    report = load_state_dict(ours, load_pdparams(path), strict=True)
    assert report.loaded == report.total == 112
    ours.eval()
    x = paddle.randn([1, 3, 67, 93])
    with paddle.no_grad():
        np.testing.assert_allclose(ours(x)[0].numpy(), theirs(x)[0].numpy(), rtol=0, atol=1e-5)
    # And back: PaddleSeg loads what we save.
    back = str(tmp_path / "ours.pdparams")
    save_pdparams(ours.state_dict(), back)
    again = paddleseg_models.UNet(num_classes=2)
    again.set_state_dict(paddle.load(back))
    again.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(again(x)[0].numpy(), theirs(x)[0].numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [2, 5])
def test_metrics_equal_paddleseg_functions(k):
    rng = np.random.default_rng(k)
    logits = rng.standard_normal((3, k, 29, 31)).astype("float32")
    label = rng.integers(0, k, (3, 29, 31))
    label[:, :2] = 255
    acc = SegMetricAccumulator(k, auc_roc=(k == 2))
    acc.update(paddle.to_tensor(logits), paddle.to_tensor(label))
    ours = acc.compute()
    # PaddleSeg 2.8's calculate_area breaks on Paddle 3's 0-D tensors; count the areas with
    # numpy and hand them to PaddleSeg's formulas.
    pred, keep = logits.argmax(1), label != 255
    inter = paddle.to_tensor([((pred == c) & (label == c) & keep).sum() for c in range(k)])
    pred_area = paddle.to_tensor([((pred == c) & keep).sum() for c in range(k)])
    label_area = paddle.to_tensor([(label == c).sum() for c in range(k)])
    class_iou, miou = paddleseg_metrics.mean_iou(inter, pred_area, label_area)
    class_dice, mdice = paddleseg_metrics.dice(inter, pred_area, label_area)
    kappa = paddleseg_metrics.kappa(inter, pred_area, label_area)
    class_acc, acc_all = paddleseg_metrics.accuracy(inter, pred_area)
    np.testing.assert_allclose(ours["class_iou"], class_iou, atol=1e-9)
    assert ours["miou"] == pytest.approx(miou, abs=1e-9)
    assert ours["mdice"] == pytest.approx(mdice, abs=1e-9)
    assert ours["kappa"] == pytest.approx(kappa, abs=1e-9)
    assert ours["acc"] == pytest.approx(acc_all, abs=1e-9)
    np.testing.assert_allclose(ours["class_precision"], class_acc, atol=1e-9)
    if k == 2:
        # PaddleSeg's auc_roc takes softmax probabilities of every pixel; no ignore pixels.
        keep = label != 255
        probs = paddle.nn.functional.softmax(paddle.to_tensor(logits), axis=1).numpy()
        flat_p = probs.transpose(1, 0, 2, 3)[:, keep].T  # (pixels, K)
        theirs = paddleseg_metrics.auc_roc(flat_p[:, :, None, None],
                                           label[keep].reshape(-1, 1, 1, 1), k)
        assert abs(ours["auc_roc"] - theirs) <= ours["auc_error_bound"] + 1e-9
