"""Checkpoints: exact round trip (weights, optimizer with its schedule, random states),
crash safety with a real SIGKILL in the middle of a save, corrupt files, pruning, files
that carry code (refused, never run) and non-finite weights (never saved)."""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from paddleseg_unet.core.checkpoint import (CheckpointError, NonFiniteStateError, TrainState,
                                            list_checkpoints, load_checkpoint,
                                            prune_checkpoints, save_checkpoint)
from paddleseg_unet.core.optim import PolynomialDecay
from paddleseg_unet.models.unet import UNet
from paddleseg_unet.utils.safe_pickle import load_pickle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny(seed: int = 0):
    paddle.seed(seed)
    model = UNet(2, base_channels=4)
    scheduler = PolynomialDecay(0.01, decay_steps=10)
    return model, paddle.optimizer.Adam(scheduler, parameters=model.parameters()), scheduler


def step(model, opt, scheduler, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (model(paddle.to_tensor(x))[0] ** 2).mean().backward()
    opt.step()
    scheduler.step()
    opt.clear_grad()


def weights(model) -> dict:
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture
def saved(tmp_path):
    model, opt, scheduler = tiny()
    step(model, opt, scheduler, 0)
    folder = save_checkpoint(str(tmp_path / "iter_1"), model, opt, TrainState(iteration=1))
    return folder, model


def test_round_trip_is_exact_in_a_differently_named_model(tmp_path):
    model, opt, scheduler = tiny()
    for i in range(2):
        step(model, opt, scheduler, i)
    state = TrainState(iteration=2, best_metric=0.5, best_iteration=1, metric_name="Dice",
                       evals_without_improvement=1, extra={"note": "x"})
    folder = save_checkpoint(str(tmp_path / "iter_2"), model, opt, state, config={"iters": 9})
    assert sorted(os.listdir(folder)) == ["model.pdopt", "model.pdparams", "rng.json",
                                          "state.json"]
    assert os.listdir(tmp_path) == ["iter_2"]  # no temporary folder left behind
    draws = (paddle.rand([4]).numpy(), np.random.rand(), random.random())

    other, other_opt, other_scheduler = tiny(seed=5)
    # Built later in this process, so Paddle named its parameters differently: the saved
    # optimizer state must still reach the right ones.
    assert [p.name for p in other.parameters()] != [p.name for p in model.parameters()]
    loaded = load_checkpoint(folder, other, other_opt)
    assert loaded["train_state"] == state and loaded["config"] == {"iters": 9}
    assert loaded["ema"] is None
    np.testing.assert_array_equal(paddle.rand([4]).numpy(), draws[0])
    assert (np.random.rand(), random.random()) == draws[1:]
    assert other_scheduler.last_epoch == 2
    for key, value in weights(model).items():
        np.testing.assert_array_equal(weights(other)[key], value)
    # Adam's moments and step counters came back: the next step is identical.
    step(model, opt, scheduler, 7)
    step(other, other_opt, other_scheduler, 7)
    for key, value in weights(model).items():
        np.testing.assert_array_equal(weights(other)[key], value, err_msg=key)


def test_optimizer_state_with_master_weights_resumes(tmp_path):
    """With nested dicts of tensors (AMP O2's master_weights) paddle.save writes every
    tensor as tuple((name, array)): the allow-list reads that too, as paddle.load does."""
    model, opt, scheduler = tiny()
    step(model, opt, scheduler, 0)
    folder = save_checkpoint(str(tmp_path / "iter_1"), model, opt, TrainState(iteration=1))
    name = model.parameters()[0].name
    master = paddle.to_tensor(np.linspace(0, 1, 4, dtype="float32"))
    paddle.save(dict(opt.state_dict(), master_weights={name: master}),
                os.path.join(folder, "model.pdopt"))
    raw = load_pickle(os.path.join(folder, "model.pdopt"))
    assert isinstance(raw["master_weights"][name], tuple)  # the (name, array) spelling
    other, other_opt, other_scheduler = tiny(seed=5)
    load_checkpoint(folder, other, other_opt)
    restored = other_opt._master_weights[other.parameters()[0].name]
    np.testing.assert_array_equal(restored.numpy(), master.numpy())
    step(model, opt, scheduler, 7)
    step(other, other_opt, other_scheduler, 7)
    for key, value in weights(model).items():
        np.testing.assert_array_equal(weights(other)[key], value, err_msg=key)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    import numpy as np, paddle
    from paddleseg_unet.core import checkpoint
    from paddleseg_unet.models.unet import UNet

    save_dir, point = sys.argv[1], sys.argv[2]
    paddle.seed(0)
    model = UNet(2, base_channels=4)
    opt = paddle.optimizer.Adam(parameters=model.parameters())
    def train_step():
        (model(paddle.ones([1, 3, 32, 32]))[0] ** 2).mean().backward()
        opt.step()
        opt.clear_grad()
    train_step()
    first = "best_model" if point == "replacing" else "iter_2"
    checkpoint.save_checkpoint(os.path.join(save_dir, first), model, opt,
                               checkpoint.TrainState(iteration=2))
    np.savez(os.path.join(save_dir, "expected.npz"),
             **{{k: v.numpy() for k, v in model.state_dict().items()}})
    train_step()

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "writing":  # model.pdparams is written; killed while writing model.pdopt
        checkpoint.paddle.save = die
        checkpoint.save_checkpoint(os.path.join(save_dir, "iter_4"), model, opt,
                                   checkpoint.TrainState(iteration=4))
    else:  # best_model moved aside, killed before the new one is renamed into place
        real_replace = os.replace
        def replace(src, dst):
            if os.path.basename(dst) == "best_model":
                die()
            return real_replace(src, dst)
        checkpoint.os.replace = replace
        checkpoint.save_checkpoint(os.path.join(save_dir, "best_model"), model, None,
                                   checkpoint.TrainState(iteration=4))
    print("not killed")
""")


@pytest.mark.parametrize("point", ["writing", "replacing"])
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(tmp_path, point):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(repo=REPO))
    save_dir = tmp_path / "out"
    save_dir.mkdir()
    proc = subprocess.run([sys.executable, str(script), str(save_dir), point],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-2000:]
    expected = dict(np.load(save_dir / "expected.npz"))
    names = sorted(os.listdir(save_dir))
    model = UNet(2, base_channels=4)
    if point == "writing":
        temp = f".iter_4.tmp-{proc_pid(names)}"
        assert names == [temp, "expected.npz", "iter_2"]  # no half-written iter_4
        assert os.path.isfile(save_dir / temp / "model.pdparams")
        state = load_checkpoint(str(save_dir / "iter_2"), model)["train_state"]
        assert state.iteration == 2
        assert prune_checkpoints(str(save_dir), 5) == [str(save_dir / temp)]  # dead pid
        assert sorted(os.listdir(save_dir)) == ["expected.npz", "iter_2"]
    else:
        aside = f"best_model.old-{proc_pid(names)}"
        assert "best_model" not in names and aside in names
        with pytest.raises(CheckpointError, match=f"rename .*{aside} back to"):
            load_checkpoint(str(save_dir / "best_model"), model)
        load_checkpoint(str(save_dir / aside), model)
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def proc_pid(names) -> str:
    """The killed process's pid, read off the names it left."""
    return next(n.rsplit("-", 1)[1] for n in names if ".tmp-" in n or ".old-" in n)


def test_saving_over_an_existing_folder_replaces_it(tmp_path):
    model, opt, scheduler = tiny()
    folder = str(tmp_path / "best_model")
    save_checkpoint(folder, model, None, TrainState(iteration=1))
    step(model, opt, scheduler, 0)
    save_checkpoint(folder, model, None, TrainState(iteration=2))
    assert os.listdir(tmp_path) == ["best_model"]
    fresh = UNet(2, base_channels=4)
    assert load_checkpoint(folder, fresh)["train_state"].iteration == 2
    for key, value in weights(model).items():
        np.testing.assert_array_equal(weights(fresh)[key], value)


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage, culprit", [
    (lambda d: os.remove(os.path.join(d, "model.pdparams")), "model.pdparams"),
    (lambda d: _truncate(os.path.join(d, "model.pdparams")), "model.pdparams"),
    (lambda d: _truncate(os.path.join(d, "model.pdopt")), "model.pdopt"),
    (lambda d: open(os.path.join(d, "model.pdopt"), "w").write("text"), "model.pdopt"),
    (lambda d: open(os.path.join(d, "model.pdparams"), "w").write("text"), "model.pdparams"),
    (lambda d: _truncate(os.path.join(d, "state.json")), "state.json"),
    (lambda d: open(os.path.join(d, "state.json"), "w").write(
        json.dumps({"train_state": {"iteration": "ten"}})), "state.json"),
    (lambda d: open(os.path.join(d, "state.json"), "w").write("[1, 2]"), "state.json"),
    (lambda d: open(os.path.join(d, "rng.json"), "w").write("junk"), "rng.json"),
    (lambda d: open(os.path.join(d, "rng.json"), "w").write('{"python": 1}'), "rng.json"),
])
def test_damaged_checkpoint_names_the_file_and_changes_nothing(saved, damage, culprit):
    folder, _ = saved
    damage(folder)
    model, opt, _ = tiny(seed=3)
    before, numpy_state = weights(model), np.random.get_state()[1].copy()
    with pytest.raises(CheckpointError, match=re.escape(os.path.join(folder, culprit))):
        load_checkpoint(folder, model, opt)
    for key, value in weights(model).items():
        np.testing.assert_array_equal(value, before[key])
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


def test_checkpoint_of_another_model_is_refused(saved):
    folder, _ = saved
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(folder, UNet(2, base_channels=8))
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(folder + "_missing", UNet(2, base_channels=4))


def test_prune_keeps_the_newest_numerically_and_clears_dead_temp_folders(tmp_path):
    for name in ("iter_2", "iter_9", "iter_10", "iter_100", "best_model", "iter_x"):
        (tmp_path / name).mkdir()
    (tmp_path / "iter_7").write_text("a file, not a checkpoint")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".iter_11.tmp-{dead}").mkdir()
    (tmp_path / f".iter_12.tmp-{os.getpid()}").mkdir()  # a save in progress: kept
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == [
        "iter_2", "iter_9", "iter_10", "iter_100"]
    assert prune_checkpoints(str(tmp_path), 0) == [str(tmp_path / f".iter_11.tmp-{dead}")]
    removed = prune_checkpoints(str(tmp_path), 2)
    assert sorted(map(os.path.basename, removed)) == ["iter_2", "iter_9"]
    assert sorted(os.listdir(tmp_path)) == sorted([
        "iter_10", "iter_100", "best_model", "iter_x", "iter_7", f".iter_12.tmp-{os.getpid()}"])


def test_train_state_json_round_trip_and_validation():
    state = TrainState(iteration=7, best_metric=0.25, best_iteration=5, metric_name="mIoU",
                       evals_without_improvement=2)
    assert TrainState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert TrainState.from_json({"iteration": 3, "unknown_key": 1}).iteration == 3
    for bad in ({"iteration": -1}, {"iteration": True}, {"best_metric": "high"},
                {"best_iteration": 1.5}, [1]):
        with pytest.raises(ValueError):
            TrainState.from_json(bad)


# ----------------------------------------------------------------------------- code in files
class RunsCommand:
    """Unpickling this runs ``touch marker``, as plain pickle.load or paddle.load would."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


def test_the_payload_really_runs_under_plain_pickle(tmp_path):
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(RunsCommand(marker)))
    assert marker.exists()  # so the refusals below are of a working attack


@pytest.mark.parametrize("culprit", ["model.pdparams", "model.pdopt", "ema.pdparams",
                                     "rng.pkl", "nested in model.pdopt"])
def test_code_in_any_checkpoint_file_is_refused_and_never_runs(tmp_path, culprit):
    model, opt, scheduler = tiny()
    step(model, opt, scheduler, 0)
    folder = save_checkpoint(str(tmp_path / "iter_1"), model, opt, TrainState(iteration=1),
                             ema_state=weights(model))
    marker = tmp_path / "MARKER"
    name = culprit.split()[-1]
    if culprit.startswith("nested"):  # a valid optimizer state with the payload deep inside
        payload = load_pickle(os.path.join(folder, name))
        assert "LR_Scheduler" in payload and len(payload) > 10
        payload["LR_Scheduler"]["last_lr"] = [RunsCommand(marker)]
    else:
        payload = {"w": np.zeros(2, "float32"), "x": RunsCommand(marker)}
    if name == "rng.pkl":  # an old checkpoint: rng.pkl instead of rng.json
        os.remove(os.path.join(folder, "rng.json"))
    with open(os.path.join(folder, name), "wb") as f:
        pickle.dump(payload, f, protocol=4)
    other, other_opt, _ = tiny(seed=3)
    before, numpy_state = weights(other), np.random.get_state()[1].copy()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder, other, other_opt)
    assert str(err.value) == (
        f"Cannot resume: Refusing to load {os.path.join(folder, name)}: its pickle references "
        f"the Python global '{SYSTEM}', which is not allowed (only dicts, lists, tuples, sets, "
        f"numbers, strings and numpy arrays); loading it could run code. The file may be "
        f"malicious: delete it and use one from a source you trust (do not open it with "
        f"paddle.load or pickle either)")
    assert not marker.exists()
    for key, value in weights(other).items():
        np.testing.assert_array_equal(value, before[key])
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


def test_random_states_are_json_and_an_old_rng_pkl_still_restores_them_exactly(tmp_path):
    model, opt, scheduler = tiny()
    step(model, opt, scheduler, 0)
    folder = save_checkpoint(str(tmp_path / "iter_1"), model, opt, TrainState(iteration=1))
    with open(os.path.join(folder, "rng.json"), encoding="utf-8") as f:
        assert set(json.load(f)) == {"python", "numpy", "paddle"}
    os.remove(os.path.join(folder, "rng.json"))
    with open(os.path.join(folder, "rng.pkl"), "wb") as f:  # what older versions wrote
        pickle.dump({"python": random.getstate(), "numpy": np.random.get_state(),
                     "paddle": paddle.get_rng_state()}, f, protocol=4)
    draws = (paddle.rand([4]).numpy(), np.random.rand(), random.random())
    other, other_opt, _ = tiny(seed=3)
    load_checkpoint(folder, other, other_opt)
    np.testing.assert_array_equal(paddle.rand([4]).numpy(), draws[0])
    assert (np.random.rand(), random.random()) == draws[1:]


# ----------------------------------------------------------------------------- non-finite
def _poison(model, value):
    param = model.parameters()[0]
    param.set_value(np.full(param.shape, value, "float32"))
    return [k for k, v in model.state_dict().items() if v is param][0]


@pytest.mark.parametrize("where", ["model.pdparams", "ema.pdparams", "model.pdopt"])
def test_non_finite_state_is_never_saved_and_the_old_checkpoint_stays(tmp_path, where):
    model, opt, scheduler = tiny()
    step(model, opt, scheduler, 0)
    good = weights(model)
    save_checkpoint(str(tmp_path / "iter_1"), model, opt, TrainState(iteration=1))
    ema = weights(model)
    if where == "model.pdparams":
        key = _poison(model, np.nan)
    elif where == "ema.pdparams":
        key = next(iter(ema))
        ema[key] = np.full_like(ema[key], np.inf)
    else:
        scheduler.last_lr = float("nan")  # the schedule's state is in the optimizer's
        key = "last_lr"
    folder = str(tmp_path / "iter_2")
    with pytest.raises(NonFiniteStateError) as err:
        save_checkpoint(folder, model, opt, TrainState(iteration=2), ema_state=ema)
    prefix = f"{folder}/{where} (iteration 2)" + (": LR_Scheduler" if where == "model.pdopt"
                                                  else "")
    assert str(err.value) == (
        f"Refusing to write {prefix}: {key!r} holds NaN or Inf, the training has diverged. "
        f"Nothing was saved and the previous checkpoints are kept; lower the learning rate, "
        f"check the loss weights and the data, then resume from the last good checkpoint")
    assert os.listdir(tmp_path) == ["iter_1"]
    fresh = UNet(2, base_channels=4)
    load_checkpoint(str(tmp_path / "iter_1"), fresh)
    for key, value in good.items():
        np.testing.assert_array_equal(weights(fresh)[key], value)
