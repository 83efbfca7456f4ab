"""Losses against independent numpy computations."""
import numpy as np
import paddle
import pytest

from paddleseg_unet.cvlibs.config import ConfigError
from paddleseg_unet.cvlibs.registry import RegistryError
from paddleseg_unet.models.losses.bce import BCELoss
from paddleseg_unet.models.losses.cross_entropy import CrossEntropyLoss, LossInputError
from paddleseg_unet.models.losses.dice import DiceLoss
from paddleseg_unet.models.losses.mixed import MixedLoss, build_loss

IGNORE = 255


# ----------------------------------------------------------------------------- numpy references

def np_log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def np_ce(logits, label, weight=None):
    logp = np_log_softmax(logits.astype(np.float64))
    total, norm = 0.0, 0.0
    n, _, h, w = logits.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                c = label[i, y, x]
                if c == IGNORE:
                    continue
                wc = 1.0 if weight is None else weight[c]
                total += -wc * logp[i, c, y, x]
                norm += wc
    return total / norm


def np_dice(logits, label, smooth=1.0):
    p = np.exp(np_log_softmax(logits.astype(np.float64)))
    n, k = logits.shape[:2]
    table = np.zeros((n, k))
    for i in range(n):
        valid = label[i] != IGNORE
        for c in range(k):
            pc = p[i, c][valid]
            yc = (label[i][valid] == c).astype(np.float64)
            table[i, c] = 1 - (2 * (pc * yc).sum() + smooth) / (pc.sum() + yc.sum() + smooth)
    return table.mean(axis=0).mean()  # over samples, then over classes


def np_bce(logits, target, valid, pos_weight=1.0):
    x = logits.astype(np.float64)
    log_sig = -np.logaddexp(0, -x)
    log_one_minus = -np.logaddexp(0, x)
    loss = -(pos_weight * target * log_sig + (1 - target) * log_one_minus)
    return loss[valid].mean()


def make_batch(k, seed, n=2, h=6, w=7, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(n, k, h, w)).astype(np.float32)
    label = rng.integers(0, k, size=(n, h, w)).astype(np.int64)
    label[rng.random((n, h, w)) < ignore_fraction] = IGNORE
    return logits, label


def t(a, grad=False):
    tensor = paddle.to_tensor(a)
    tensor.stop_gradient = not grad
    return tensor


# ----------------------------------------------------------------------------- cross entropy

@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_numpy(k, weighted):
    logits, label = make_batch(k, seed=k)
    weight = list(np.linspace(0.5, 3.0, k)) if weighted else None
    got = float(CrossEntropyLoss(weight=weight)(t(logits), t(label)))
    assert got == pytest.approx(np_ce(logits, label, weight), rel=1e-5)


def test_cross_entropy_uniform_weight_is_unweighted_and_all_ignored_is_zero():
    logits, label = make_batch(3, seed=1)
    plain = float(CrossEntropyLoss()(t(logits), t(label)))
    assert float(CrossEntropyLoss(weight=[2.0, 2.0, 2.0])(t(logits), t(label))) == \
        pytest.approx(plain, rel=1e-6)
    all_ignored = np.full_like(label, IGNORE)
    assert float(CrossEntropyLoss()(t(logits), t(all_ignored))) == 0.0


def test_cross_entropy_accepts_n1hw_label_and_other_ignore_index():
    logits, label = make_batch(4, seed=2)
    label[label == IGNORE] = 0
    label[0, 0, :] = 9  # a different ignore value
    expected = np_ce(logits, np.where(label == 9, IGNORE, label))
    got = CrossEntropyLoss(ignore_index=9)(t(logits), t(label[:, None]))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_errors_are_clear():
    logits, label = make_batch(2, seed=3)
    with pytest.raises(LossInputError, match="weight has 3 values but the logits have 2"):
        CrossEntropyLoss(weight=[1, 1, 1])(t(logits), t(label))
    bad = label.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(LossInputError, match=r"label values \[7\] are outside 0..1"):
        CrossEntropyLoss()(t(logits), t(bad))
    with pytest.raises(LossInputError, match="does not match logits"):
        CrossEntropyLoss()(t(logits), t(label[:, :-1]))
    with pytest.raises(ValueError, match="list of numbers"):
        CrossEntropyLoss(weight=0.5)


# ----------------------------------------------------------------------------- dice

@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("smooth", [1.0, 0.5])
def test_dice_matches_numpy(k, smooth):
    logits, label = make_batch(k, seed=10 + k, n=3)
    got = float(DiceLoss(smooth=smooth)(t(logits), t(label)))
    assert got == pytest.approx(np_dice(logits, label, smooth), rel=1e-5, abs=1e-6)


def test_dice_perfect_prediction_is_near_zero():
    _, label = make_batch(3, seed=4)
    safe = np.where(label == IGNORE, 0, label)
    # Ignored pixels confidently predict class 0 (their label is 255): masked, so moot.
    logits = 40.0 * np.eye(3, dtype=np.float32)[safe].transpose(0, 3, 1, 2)
    assert float(DiceLoss()(t(logits), t(label))) < 1e-5
    # ...and a clearly wrong prediction is far from zero.
    assert float(DiceLoss()(t(-logits), t(label))) > 0.5


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), DiceLoss(), BCELoss(),
                                  MixedLoss([CrossEntropyLoss(), DiceLoss()], [1, 1])],
                         ids=["ce", "dice", "bce", "mixed"])
def test_losses_do_not_modify_label(loss):
    k = 1 if isinstance(loss, BCELoss) else 3
    logits, label = make_batch(max(k, 2), seed=5)
    logits = logits[:, :k]
    assert (label == IGNORE).any()
    original = label.copy()
    label_tensor = t(label)
    logits_tensor = t(logits, grad=True)
    loss(logits_tensor, label_tensor).backward()
    np.testing.assert_array_equal(label_tensor.numpy(), original)
    assert label_tensor.dtype == paddle.int64


@pytest.mark.parametrize("loss", [CrossEntropyLoss(weight=[1, 2, 3]), DiceLoss()],
                         ids=["ce", "dice"])
def test_gradient_exists_and_ignored_pixels_get_none(loss):
    logits, label = make_batch(3, seed=6)
    logits_tensor = t(logits, grad=True)
    loss(logits_tensor, t(label)).backward()
    grad = logits_tensor.grad.numpy()
    assert np.isfinite(grad).all()
    ignored = np.broadcast_to((label == IGNORE)[:, None], grad.shape)
    assert np.abs(grad[~ignored]).max() > 1e-6
    assert np.abs(grad[ignored]).max() == 0.0


def test_cross_entropy_gradient_matches_finite_difference():
    logits, label = make_batch(3, seed=7, n=1, h=2, w=3)
    weight = [1.0, 2.0, 0.5]
    logits_tensor = t(logits, grad=True)
    CrossEntropyLoss(weight=weight)(logits_tensor, t(label)).backward()
    eps, numeric = 1e-4, np.zeros_like(logits, dtype=np.float64)
    for idx in np.ndindex(*logits.shape):
        up, down = logits.astype(np.float64), logits.astype(np.float64)
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (np_ce(up, label, weight) - np_ce(down, label, weight)) / (2 * eps)
    np.testing.assert_allclose(logits_tensor.grad.numpy(), numeric, atol=2e-4)


# ----------------------------------------------------------------------------- BCE

@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_one_channel_matches_numpy(pos_weight):
    logits, label = make_batch(2, seed=8)
    logits = logits[:, :1] * 5  # large logits exercise the stable form
    got = float(BCELoss(pos_weight=pos_weight)(t(logits), t(label)))
    valid = label != IGNORE
    expected = np_bce(logits[:, 0], label.astype(np.float64), valid,
                      1.0 if pos_weight is None else pos_weight)
    assert got == pytest.approx(expected, rel=1e-5)


def test_bce_multi_channel_uses_one_hot():
    logits, label = make_batch(3, seed=9)
    got = float(BCELoss(pos_weight=[1.0, 2.0, 0.5])(t(logits), t(label)))
    safe = np.where(label == IGNORE, 0, label)
    target = np.eye(3)[safe].transpose(0, 3, 1, 2)
    valid = np.broadcast_to((label != IGNORE)[:, None], logits.shape)
    pw = np.array([1.0, 2.0, 0.5]).reshape(1, 3, 1, 1)
    expected = np_bce(logits, target, valid, pw * np.ones(logits.shape))
    assert got == pytest.approx(expected, rel=1e-5)


def test_bce_rejects_non_binary_label():
    logits, label = make_batch(3, seed=10)
    with pytest.raises(LossInputError, match="outside 0..1"):
        BCELoss()(t(logits[:, :1]), t(label))


# ----------------------------------------------------------------------------- mixed and build

def test_mixed_loss_is_weighted_sum():
    logits, label = make_batch(4, seed=11)
    got = float(MixedLoss([CrossEntropyLoss(), DiceLoss()], [0.7, 0.3])(t(logits), t(label)))
    expected = 0.7 * np_ce(logits, label) + 0.3 * np_dice(logits, label)
    assert got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="coef has 1 values for 2 losses"):
        MixedLoss([CrossEntropyLoss(), DiceLoss()], [1.0])


def test_build_loss_pairs_types_with_outputs():
    logits, label = make_batch(2, seed=12)
    aux, _ = make_batch(2, seed=13)
    cfg = {"types": [{"type": "MixedLoss",
                      "losses": [{"type": "CrossEntropyLoss", "weight": [1.0, 4.0]},
                                 {"type": "DiceLoss"}],
                      "coef": [0.8, 0.2]},
                     {"type": "DiceLoss", "smooth": 0.5}],
           "coef": [1, 0.4]}
    loss = build_loss(cfg, where="x.yml: loss")
    got = loss([t(logits), t(aux)], t(label))
    expected = (0.8 * np_ce(logits, label, [1.0, 4.0]) + 0.2 * np_dice(logits, label)
                + 0.4 * np_dice(aux, label, 0.5))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    terms = loss.terms([t(logits), t(aux)], t(label))
    assert float(terms[1]) == pytest.approx(0.4 * np_dice(aux, label, 0.5), rel=1e-5)


def test_build_loss_single_output_unet_style():
    logits, label = make_batch(2, seed=14)
    loss = build_loss({"types": [{"type": "DiceLoss"}], "coef": [1]}, "drive.yml: loss")
    assert float(loss([t(logits)], t(label))) == pytest.approx(np_dice(logits, label), rel=1e-5)
    assert float(loss(t(logits), t(label))) == pytest.approx(np_dice(logits, label), rel=1e-5)
    with pytest.raises(LossInputError, match=r"drive.yml: loss: the model returned 2 logit"):
        loss([t(logits), t(logits)], t(label))


def test_build_loss_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"a.yml: loss.coef: coef has 2 values for 1"):
        build_loss({"types": [{"type": "DiceLoss"}], "coef": [1, 1]}, "a.yml: loss")
    with pytest.raises(ConfigError, match=r"a.yml: loss.types: must be a non-empty list"):
        build_loss({"types": [], "coef": []}, "a.yml: loss")
    with pytest.raises(RegistryError, match=r"Unknown losses type 'DiceLos'.*'DiceLoss'"):
        build_loss({"types": [{"type": "DiceLos"}], "coef": [1]}, "a.yml: loss")
    with pytest.raises(RegistryError, match=r"a.yml: loss.types\[0\].*does not take 'smoth'"):
        build_loss({"types": [{"type": "DiceLoss", "smoth": 1}], "coef": [1]}, "a.yml: loss")
    with pytest.raises(ConfigError, match=r"a.yml: loss.types\[0\].smooth: DiceLoss: smooth"):
        build_loss({"types": [{"type": "DiceLoss", "smooth": -1}], "coef": [1]}, "a.yml: loss")


# On CPU autocast is a no-op (Paddle warns); the bf16 logits still must give a float32 loss.
@pytest.mark.filterwarnings("ignore:amp_guard can only be enabled")
def test_build_loss_computes_in_float32_under_amp():
    logits, label = make_batch(2, seed=15, h=16, w=16)
    loss = build_loss({"types": [{"type": "DiceLoss"}], "coef": [1]})
    low = t(logits).astype("bfloat16")
    with paddle.amp.auto_cast(level="O2", dtype="bfloat16"):
        value = loss([low], t(label))
    assert value.dtype == paddle.float32
    rounded = low.astype("float32").numpy()  # the logits the loss actually saw
    assert float(value) == pytest.approx(np_dice(rounded, label), rel=1e-5)
