"""The trainer's hooks and writers: evaluation on its own interval, a user's hook with
state that survives resume, a user's writer, and a hook added from YAML alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, List

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dist_train_worker import REPO, build_parts, write_tiny_dataset  # noqa: E402

from paddleseg_unet.core.hooks import HookBase, Writer  # noqa: E402
from paddleseg_unet.core.train import Trainer, TrainError, TrainOptions  # noqa: E402
from paddleseg_unet.datasets import Dataset  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_tiny_dataset(str(tmp_path_factory.mktemp("tiny_hooks")), num_images=4,
                              size=32, num_val=1)


def trainer_for(root: str, save_dir: str, iters: int, hooks=(), writers=(), **options: Any):
    model, dataset, loss, opt, scheduler = build_parts(root, iters)
    evaluations: List[int] = []

    def evaluate_fn(model, dataset, num_classes, **kw):
        evaluations.append(trainer.iter)
        return {"miou": 0.1 * len(evaluations)}

    opts = TrainOptions(iters=iters, batch_size=2, save_dir=save_dir, **options)
    val = Dataset(root, [{"type": "Normalize"}], 2, "val", val_path="val_list.txt") \
        if opts.do_eval else None
    trainer = Trainer(model, dataset, loss, opt, scheduler, opts, val_dataset=val,
                      num_classes=2, evaluate_fn=evaluate_fn, hooks=hooks, writers=writers)
    return trainer, evaluations


def test_evaluation_has_its_own_interval(root, tmp_path):
    trainer, evaluations = trainer_for(root, str(tmp_path), 6, do_eval=True, save_interval=3,
                                       eval_interval=2, keep_checkpoint_max=5)
    trainer.train()
    assert evaluations == [2, 4, 6]
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("iter_")) == [
        "iter_3", "iter_6"]
    # best_model follows the evaluations (0.1, 0.2, 0.3 rising): the last one, iter 6
    assert (trainer.state.best_iteration, trainer.state.best_metric) == (6, pytest.approx(0.3))


class CountSteps(HookBase):
    def __init__(self) -> None:
        self.count = 0
        self.before = self.after = 0

    def before_train(self) -> None:
        self.before += 1

    def after_train(self) -> None:
        self.after += 1

    def after_step(self) -> None:
        self.count += 1

    def state_dict(self) -> Dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state) -> None:
        self.count = state["count"]


def test_a_hook_state_is_saved_and_resumed(root, tmp_path):
    first = CountSteps()
    trainer, _ = trainer_for(root, str(tmp_path), 2, hooks=[first], save_interval=2)
    trainer.train()
    assert (first.before, first.count, first.after) == (1, 2, 1)
    state = json.load(open(tmp_path / "iter_2" / "state.json"))
    assert state["train_state"]["extra"]["hooks"] == {"CountSteps": {"count": 2}}
    again = CountSteps()
    resumed, _ = trainer_for(root, str(tmp_path), 4, hooks=[again], save_interval=2,
                             resume_model=str(tmp_path / "iter_2"))
    resumed.train()
    assert again.count == 4  # 2 restored + 2 new steps


def test_a_writer_receives_training_rows_and_evaluations(root, tmp_path):
    class Collect(Writer):
        def __init__(self) -> None:
            self.train, self.eval, self.closed = [], [], False

        def write_train(self, iteration, row):
            self.train.append((iteration, row["loss"]))

        def write_eval(self, iteration, metrics):
            self.eval.append((iteration, metrics["miou"]))

        def close(self):
            self.closed = True

    writer = Collect()
    trainer, _ = trainer_for(root, str(tmp_path), 4, writers=[writer], log_iters=2,
                             do_eval=True, save_interval=4, eval_interval=2)
    trainer.train()
    assert [i for i, _ in writer.train] == [2, 4]
    assert [row["loss"] for row in trainer.history] == [loss for _, loss in writer.train]
    assert writer.eval == [(2, pytest.approx(0.1)), (4, pytest.approx(0.2))]
    assert writer.closed


def test_hooks_run_in_priority_order_and_must_be_hooks(root, tmp_path):
    order: List[str] = []

    class Early(HookBase):
        priority = 1

        def after_step(self):
            order.append("early")

    class Late(HookBase):
        priority = 99

        def after_step(self):
            order.append("late" if os.path.isdir(tmp_path / "iter_1") else "late-before-save")

    trainer, _ = trainer_for(root, str(tmp_path), 1, hooks=[Late(), Early()], save_interval=1)
    trainer.train()
    assert order == ["early", "late"]  # Late (99) runs after CheckpointHook (70)
    with pytest.raises(TrainError, match="a hook must be a HookBase, got int"):
        trainer_for(root, str(tmp_path), 1, hooks=[3])


def test_a_hook_named_in_yaml_runs_without_editing_the_package(root, tmp_path):
    plugin = tmp_path / "plugins" / "my_hooks.py"
    plugin.parent.mkdir()
    plugin.write_text(textwrap.dedent("""
        import json, os
        from paddleseg_unet.core.hooks import HookBase
        from paddleseg_unet.cvlibs.registry import HOOKS

        @HOOKS.register()
        class RecordLoss(HookBase):
            def __init__(self, path):
                self.path, self.rows = path, []

            def after_step(self):
                self.rows.append([self.trainer.iter, float(self.trainer.loss)])

            def after_train(self):
                with open(self.path, "w") as f:
                    json.dump(self.rows, f)
        """))
    record = tmp_path / "losses.json"
    config = tmp_path / "c.yml"
    config.write_text(textwrap.dedent(f"""
        batch_size: 2
        iters: 3
        custom_imports: [my_hooks]
        train_config:
          hooks: [{{type: RecordLoss, path: {record}}}]
        train_dataset: {{type: Dataset, dataset_root: {root}, num_classes: 2, mode: train,
                        train_path: train_list.txt, transforms: [{{type: Normalize}}]}}
        model: {{type: UNet, num_classes: 2, base_channels: 4}}
        loss: {{types: [{{type: CrossEntropyLoss}}], coef: [1]}}
        optimizer: {{type: Adam}}
        lr_scheduler: {{type: PolynomialDecay, learning_rate: 0.01}}
        """))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(plugin.parent))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"),
                           "--config", str(config), "--save_dir", str(tmp_path / "out"),
                           "--log_iters", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(record.read_text())
    assert [r[0] for r in rows] == [1, 2, 3] and all(r[1] > 0 for r in rows)

    config.write_text(config.read_text().replace("[my_hooks]", "[no_such_module_here]"))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"),
                           "--config", str(config), "--save_dir", str(tmp_path / "out2")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "custom_imports[0]: cannot import 'no_such_module_here'" in proc.stderr


def test_paddleseg_ema_ramp_matches_numpy(root, tmp_path):
    """--use_ema: decay min(1 - 1/(iter + 1), 0.999) at iteration iter (PaddleSeg's)."""
    from dist_train_worker import weights_of

    snapshots = []

    class Record(HookBase):
        priority = 5  # the raw weights after each step, before the EMA hook

        def before_train(self):
            snapshots.append(weights_of(self.trainer.model))

        def after_step(self):
            snapshots.append(weights_of(self.trainer.model))

    trainer, _ = trainer_for(root, str(tmp_path), 3, hooks=[Record()], save_interval=3,
                             ema_decay=0.999, ema_warmup=True)
    trainer.train()
    expected = snapshots[0]
    for it, now in enumerate(snapshots[1:], start=1):
        d = min(1 - 1 / (it + 1), 0.999)  # 0.5, 2/3, 0.75
        expected = {k: d * expected[k] + (1 - d) * now[k] for k in expected}
    import numpy as np
    from paddleseg_unet.utils.weights import load_pdparams
    ema = load_pdparams(str(tmp_path / "iter_3" / "ema.pdparams"))
    for key, value in expected.items():
        if key in ema and np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(ema[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_resume_model_auto_takes_the_newest_checkpoint(root, tmp_path, log_lines):
    first, _ = trainer_for(root, str(tmp_path), 4, save_interval=2, resume_model="auto")
    first.options.iters = 2  # a run stopped after iteration 2
    first.train()
    assert any(line.startswith("--resume_model auto: no checkpoint in") for line in log_lines)
    again, _ = trainer_for(root, str(tmp_path), 4, save_interval=2, resume_model="auto",
                           log_iters=1)
    again.train()
    assert again.options.resume_model == str(tmp_path / "iter_2")
    assert [row["iter"] for row in again.history] == [3, 4]
    assert again.state.iteration == 4
