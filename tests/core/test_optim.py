"""LR schedules against closed forms; optimizer steps against numpy update rules."""
import math

import numpy as np
import paddle
import pytest

from paddleseg_unet.core.optim import (CosineDecay, LinearWarmup, PolynomialDecay,
                                       build_lr_scheduler, build_optimizer)
from paddleseg_unet.cvlibs.config import ConfigError
from paddleseg_unet.cvlibs.registry import RegistryError

W0 = np.array([1.0, -2.0, 3.0], dtype=np.float32)
C = np.array([0.5, -1.0, 2.0], dtype=np.float32)  # loss = sum(C * w), so grad = C


def lr_sequence(scheduler, steps):
    values = []
    for _ in range(steps):
        values.append(scheduler.last_lr)
        scheduler.step()
    return values


def poly(t, lr, total, power=0.9, end=0.0):
    t = min(t, total)
    return (lr - end) * (1 - t / total) ** power + end


def make_param(values=W0):
    return paddle.create_parameter(
        [len(values)], "float32",
        default_initializer=paddle.nn.initializer.Assign(np.asarray(values, np.float32)))


def train(param, optimizer, scheduler, steps, grad_fn=lambda w: C):
    """Trainer order: optimizer.step() then lr_scheduler.step(); returns (lrs, weights)."""
    lrs, weights = [], []
    for _ in range(steps):
        grad = paddle.to_tensor(grad_fn(param.numpy()))
        (param * grad).sum().backward()
        lrs.append(optimizer.get_lr())
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        weights.append(param.numpy().copy())
    return lrs, weights


# ----------------------------------------------------------------------------- schedules

def test_polynomial_decay_closed_form():
    sched = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.1,
                                "end_lr": 0.0, "power": 0.9}, iters=10)
    got = lr_sequence(sched, 13)
    assert got[0] == 0.1
    assert got[1] == pytest.approx(0.1 * 0.9 ** 0.9, rel=1e-12)
    assert got[5] == pytest.approx(0.1 * 0.5 ** 0.9, rel=1e-12)
    assert got[10:] == [0.0, 0.0, 0.0]  # clamped at decay_steps
    np.testing.assert_allclose(got, [poly(t, 0.1, 10) for t in range(13)], rtol=1e-12)


def test_polynomial_decay_end_lr_and_explicit_steps():
    sched = PolynomialDecay(0.05, decay_steps=8, end_lr=0.01, power=2.0)
    got = lr_sequence(sched, 10)
    np.testing.assert_allclose(got, [poly(t, 0.05, 8, 2.0, 0.01) for t in range(10)],
                               rtol=1e-12)
    assert got[-1] == pytest.approx(0.01)


def test_reference_config_lr_at_half_of_40k():
    sched = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.01,
                                "end_lr": 0, "power": 0.9}, iters=40000)
    for _ in range(20000):  # the incremental path the trainer takes
        sched.step()
    assert sched.last_lr == pytest.approx(0.01 * 0.5 ** 0.9, rel=1e-12)
    sched.step(39999)
    assert sched.last_lr == pytest.approx(0.01 * (1 / 40000) ** 0.9, rel=1e-9)


def test_polynomial_warmup_then_decay_over_the_rest():
    sched = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.1,
                                "warmup_iters": 5, "warmup_start_lr": 0.001}, iters=25)
    assert sched.decay_steps == 20  # PaddleSeg: iters - warmup_iters
    got = lr_sequence(sched, 27)
    expected = [0.001 + (0.1 - 0.001) * t / 5 if t < 5 else poly(t - 5, 0.1, 20)
                for t in range(27)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[2] == pytest.approx(0.001 + 0.099 * 0.4)
    assert got[5] == 0.1 and got[15] == pytest.approx(0.1 * 0.5 ** 0.9)


def test_cosine_decay_with_warmup():
    sched = build_lr_scheduler({"type": "CosineAnnealingDecay", "learning_rate": 0.2,
                                "eta_min": 0.02, "warmup_iters": 2}, iters=12)
    assert isinstance(sched, CosineDecay) and sched.T_max == 10
    got = lr_sequence(sched, 14)
    expected = [0.2 * t / 2 if t < 2 else
                0.02 + 0.18 * 0.5 * (1 + math.cos(math.pi * min(t - 2, 10) / 10))
                for t in range(14)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[7] == pytest.approx(0.11)  # half way: the mean of the two ends


def test_linear_warmup_composition_equals_builtin_warmup():
    nested = build_lr_scheduler({"type": "LinearWarmup", "warmup_steps": 4, "start_lr": 0.0,
                                 "learning_rate": {"type": "PolynomialDecay",
                                                   "learning_rate": 0.1}}, iters=20)
    flat = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.1,
                               "warmup_iters": 4}, iters=20)
    assert isinstance(nested, LinearWarmup) and nested.learning_rate.decay_steps == 16
    np.testing.assert_allclose(lr_sequence(nested, 22), lr_sequence(flat, 22), rtol=1e-12)
    constant = LinearWarmup(0.3, warmup_steps=3, start_lr=0.0)
    np.testing.assert_allclose(lr_sequence(constant, 5), [0.0, 0.1, 0.2, 0.3, 0.3])


@pytest.mark.parametrize("cfg", [
    {"type": "PolynomialDecay", "learning_rate": 0.01, "power": 0.9, "warmup_iters": 3},
    {"type": "LinearWarmup", "warmup_steps": 3,
     "learning_rate": {"type": "CosineDecay", "learning_rate": 0.01}},
], ids=["poly", "linear-warmup"])
def test_scheduler_state_dict_resumes_exactly(cfg):
    reference = lr_sequence(build_lr_scheduler(cfg, iters=12), 12)
    first = build_lr_scheduler(cfg, iters=12)
    head = lr_sequence(first, 5)
    state = first.state_dict()
    resumed = build_lr_scheduler(cfg, iters=12)
    resumed.set_state_dict(state)
    assert head + lr_sequence(resumed, 7) == reference


def test_schedule_config_errors():
    with pytest.raises(ConfigError, match=r"d.yml: lr_scheduler.power: PolynomialDecay: power"):
        build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.01, "power": 0},
                           100, "d.yml: lr_scheduler")
    with pytest.raises(ConfigError, match=r"learning_rate must be a number"):
        build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": "0.01x"}, 100)
    with pytest.raises(RegistryError, match=r"'PolynomialDecay'"):
        build_lr_scheduler({"type": "PolynomialDecy", "learning_rate": 0.01}, 100)
    with pytest.raises(ValueError, match="decay_steps is required"):
        PolynomialDecay(0.01)


# ----------------------------------------------------------------------------- optimizers

def test_optimizer_applies_the_scheduled_lr_each_step():
    sched = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.1,
                                "warmup_iters": 2, "warmup_start_lr": 0.01}, iters=8)
    param = make_param()
    opt = build_optimizer({"type": "SGD"}, [param], sched)
    assert type(opt) is paddle.optimizer.SGD
    _, weights = train(param, opt, sched, 10)
    previous = W0.astype(np.float64)
    for t, w in enumerate(weights):
        expected_lr = 0.01 + 0.09 * t / 2 if t < 2 else poly(t - 2, 0.1, 6)
        applied = (previous - w) / C  # plain SGD: w -= lr * grad
        np.testing.assert_allclose(applied, expected_lr, rtol=1e-4, atol=1e-7)
        previous = w.astype(np.float64)


def test_momentum_with_l2_matches_numpy():
    sched = build_lr_scheduler({"type": "PolynomialDecay", "learning_rate": 0.1}, iters=6)
    param = make_param()
    opt = build_optimizer({"type": "SGD", "momentum": 0.9, "weight_decay": 0.05},
                          [param], sched, "x.yml: optimizer")
    assert type(opt) is paddle.optimizer.Momentum
    _, weights = train(param, opt, sched, 6)
    w, v = W0.astype(np.float64), np.zeros(3)
    for t in range(6):
        v = 0.9 * v + (C + 0.05 * w)  # coupled L2 inside the momentum buffer
        w = w - poly(t, 0.1, 6) * v
        np.testing.assert_allclose(weights[t], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["sgd", "Momentum"])
def test_legacy_sgd_and_momentum_mean_momentum_09(kind):
    opt = build_optimizer({"type": kind, "weight_decay": 4.0e-5}, [make_param()], 0.01)
    assert type(opt) is paddle.optimizer.Momentum
    assert opt._momentum == pytest.approx(0.9)


def np_adam(w, grads, lr, wd, decoupled, b1=0.9, b2=0.999, eps=1e-8):
    m, v = np.zeros_like(w), np.zeros_like(w)
    out = []
    for step, g in enumerate(grads, start=1):
        if decoupled:
            w = w * (1 - lr * wd)
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_adam_coupled_and_adamw_decoupled_decay(kind):
    lr, wd = 0.01, 0.5  # a large decay so coupled and decoupled clearly differ
    param = make_param()
    sched = build_lr_scheduler({"type": "LinearWarmup", "learning_rate": lr,
                                "warmup_steps": 0}, iters=3)
    opt = build_optimizer({"type": kind, "weight_decay": wd}, [param], sched)
    # Gradients that vary per step, so the moments matter.
    grads = [C * s for s in (1.0, -0.5, 2.0)]
    seen = []
    for g in grads:
        (param * paddle.to_tensor(g)).sum().backward()
        opt.step()
        opt.clear_grad()
        sched.step()
        seen.append(param.numpy().copy())
    expected = np_adam(W0.astype(np.float64), grads, lr, wd, decoupled=(kind == "AdamW"))
    np.testing.assert_allclose(seen, expected, rtol=1e-5, atol=1e-6)
    other = np_adam(W0.astype(np.float64), grads, lr, wd, decoupled=(kind != "AdamW"))
    assert np.abs(np.array(seen) - np.array(other)).max() > 1e-4


def test_grad_clip_by_global_norm():
    param = make_param()
    opt = build_optimizer({"type": "SGD", "grad_clip": 0.5}, [param], 0.1)
    _, weights = train(param, opt, LinearWarmup(0.1, warmup_steps=0), 1)
    clipped = C * 0.5 / np.linalg.norm(C)
    np.testing.assert_allclose(weights[0], W0 - 0.1 * clipped, rtol=1e-5)
    cfg_style = build_optimizer({"type": "SGD", "grad_clip_cfg": {
        "name": "ClipGradByGlobalNorm", "clip_norm": 0.5}}, [make_param()], 0.1)
    assert isinstance(cfg_style._grad_clip, paddle.nn.ClipGradByGlobalNorm)


def test_optimizer_and_scheduler_state_resume_identically():
    cfg_opt = {"type": "SGD", "momentum": 0.9, "weight_decay": 0.01}
    cfg_lr = {"type": "PolynomialDecay", "learning_rate": 0.05, "warmup_iters": 2}

    def session(steps, state=None):
        """One 'process': its own parameter-name space, as a restarted trainer has."""
        with paddle.utils.unique_name.guard():
            param = make_param()
            sched = build_lr_scheduler(cfg_lr, iters=10)
            opt = build_optimizer(cfg_opt, [param], sched)
            if state is not None:
                param.set_value(state["weights"])
                opt.set_state_dict(state["opt"])  # restores the scheduler too (LR_Scheduler)
                assert sched.last_epoch == 4
            lrs, weights = train(param, opt, sched, steps, grad_fn)
            saved = {"weights": param.numpy().copy(),
                     "opt": {k: (v.numpy().copy() if isinstance(v, paddle.Tensor) else v)
                             for k, v in opt.state_dict().items()}}
        return lrs, weights, saved

    def grad_fn(w):  # depends on w so the momentum state and the weights both matter
        return (C + 0.3 * w).astype(np.float32)

    ref_lrs, ref_w, _ = session(10)
    head_lrs, _, saved = session(4)
    tail_lrs, tail_w, _ = session(6, saved)
    assert head_lrs + tail_lrs == ref_lrs
    np.testing.assert_array_equal(tail_w[-1], ref_w[-1])


def test_optimizer_config_errors():
    param = [make_param()]
    with pytest.raises(ConfigError, match=r"o.yml: optimizer.learning_rate: not allowed"):
        build_optimizer({"type": "SGD", "learning_rate": 0.1}, param, 0.1, "o.yml: optimizer")
    with pytest.raises(ConfigError, match=r"o.yml: optimizer.weight_decay: SGD: weight_decay"):
        build_optimizer({"type": "SGD", "weight_decay": "4e-5"}, param, 0.1,
                        "o.yml: optimizer")
    with pytest.raises(RegistryError, match=r"does not take 'momentun'.*'momentum'"):
        build_optimizer({"type": "SGD", "momentun": 0.9}, param, 0.1)
    with pytest.raises(ConfigError, match="grad_clip_cfg must be a mapping"):
        build_optimizer({"type": "Adam", "grad_clip_cfg": {"name": "Nope"}}, param, 0.1)
