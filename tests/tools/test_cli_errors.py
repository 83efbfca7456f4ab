"""Bad command-line input gets one clear line (exit 1), before any work: the tools' ``main``
run in-process through ``run_cli`` (as ``python tools/X.py`` runs it), stderr captured."""
import importlib.util
import os

import paddle
import pytest

from paddleseg_unet.apis.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(REPO, "configs", "quickstart", "unet_synthetic_vessels.yml")
TINY = ["train_dataset.num_images=4", "train_dataset.image_size=64",
        "val_dataset.num_images=4", "val_dataset.image_size=64", "model.base_channels=4"]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}",
                                                  os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh PADDLESEG_UNET_HOME: a synthetic dataset appearing there means work ran."""
    path = tmp_path / "home"
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(path))
    return path


def run(capsys, tool, *argv):
    from paddleseg_unet.utils.logger import setup_logger

    code = run_cli(load_tool(tool).main, list(argv))
    captured = capsys.readouterr()
    setup_logger()  # the tool bound the logger to the captured stdout
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    return code, errors, captured


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("tool,extra", [("train", ["--iters", "1"]), ("predict", ["--image_path", "x.png"]),
                                        ("export", [])])
def test_save_dir_that_is_a_file(capsys, home, a_file, tool, extra):
    code, errors, captured = run(capsys, tool, "--config", QUICK, "--save_dir", str(a_file),
                                 *extra, "--opts", *TINY)
    assert code == 1 and "Traceback" not in captured.err
    assert errors == [f"error: --save_dir {a_file} is an existing file, not a folder; give a "
                      f"folder path (it is created if missing)"]
    assert not home.exists() and a_file.read_text() == "not a folder"


@pytest.mark.parametrize("tool", ["train", "export"])
def test_save_dir_that_cannot_be_created(capsys, home, a_file, tool):
    # Root may write anywhere, but not below a regular file: the test holds for every user.
    target = a_file / "run"
    code, errors, _ = run(capsys, tool, "--config", QUICK, "--save_dir", str(target),
                          "--opts", *TINY)
    assert code == 1
    assert errors == [f"error: --save_dir {target} cannot be written ({a_file} is a file, "
                      f"not a folder); give a folder you can write to"]
    assert not home.exists()


def test_val_save_json_is_checked_before_evaluating(capsys, home, a_file, tmp_path):
    target = a_file / "metrics.json"
    code, errors, captured = run(capsys, "val", "--config", QUICK, "--save_json", str(target),
                                 "--opts", *TINY)
    assert code == 1
    assert errors == [f"error: --save_json {target}: its folder {a_file} is an existing file, "
                      f"not a folder; give a folder path (it is created if missing)"]
    assert "[EVAL]" not in captured.out and not home.exists()
    code, errors, _ = run(capsys, "val", "--config", QUICK, "--save_json", str(tmp_path),
                          "--opts", *TINY)
    assert errors == [f"error: --save_json {tmp_path} is a folder; give a file path, e.g. "
                      f"{tmp_path / 'metrics.json'}"]


@pytest.mark.parametrize("opt,key,problem", [
    ("model.base_channels=-8", "model.base_channels",
     "UNet: base_channels must be a positive integer, got -8"),
    ("model.base_channels=abc", "model.base_channels",
     "UNet: base_channels must be a positive integer, got 'abc'"),
    ("train_dataset.transforms.1.crop_size=[128]", "train_dataset.transforms[1].crop_size",
     "RandomPaddingCrop: crop_size must be an int or a pair of ints (width, height), "
     "got [128]"),
    ("train_dataset.transforms.1.crop_size=[0,128]", "train_dataset.transforms[1].crop_size",
     "RandomPaddingCrop: crop_size must be positive, got [0, 128]"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay",
     "Adam: weight_decay must be a number >= 0, got -1"),
])
def test_rejected_component_value_names_file_and_key(capsys, tmp_path, home, opt, key, problem):
    out = tmp_path / "out"
    code, errors, captured = run(capsys, "train", "--config", QUICK, "--save_dir", str(out),
                                 "--iters", "1", "--device", "cpu", "--opts", *TINY, opt)
    assert code == 1 and "Traceback" not in captured.err
    assert errors == [f"error: --opts: {key}: {problem}"]  # where the value came from
    assert "[TRAIN]" not in captured.out and not list(out.glob("iter_*"))


def test_rejected_value_names_the_file_that_set_it(capsys, tmp_path, home):
    # base.yml sets the bad width; child.yml (the --config) only touches another model key.
    base, child = tmp_path / "base.yml", tmp_path / "child.yml"
    base.write_text(f"_base_: {QUICK}\nmodel:\n  base_channels: 0\n")
    child.write_text("_base_: base.yml\nmodel:\n  num_classes: 2\n")
    out = tmp_path / "out"
    code, errors, captured = run(capsys, "train", "--config", str(child), "--save_dir", str(out),
                                 "--iters", "1", "--device", "cpu", "--opts", *TINY[:4])
    assert code == 1
    assert errors == [f"error: {base}: model.base_channels: UNet: base_channels must be a "
                      f"positive integer, got 0"]
    assert "[TRAIN]" not in captured.out and not list(out.glob("iter_*"))


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="needs a CPU-only Paddle")
def test_device_gpu_on_a_cpu_only_build(capsys, tmp_path, home):
    code, errors, captured = run(capsys, "train", "--config", QUICK, "--device", "gpu",
                                 "--save_dir", str(tmp_path / "out"), "--opts", *TINY)
    assert code == 1 and "Traceback" not in captured.err
    assert errors == ["error: --device gpu: this Paddle build is CPU-only; use --device cpu, "
                      "or install paddlepaddle-gpu (pip install -e .[gpu]) on a CUDA machine"]
    assert not home.exists()


@pytest.mark.parametrize("tool", ["train", "val"])
def test_negative_num_workers(capsys, tmp_path, home, tool):
    code, errors, _ = run(capsys, tool, "--config", QUICK, "--num_workers", "-1",
                          "--device", "cpu", "--opts", *TINY,
                          *(["--save_dir", str(tmp_path / "out")] if tool == "train" else []))
    assert code == 1
    assert errors == ["error: --num_workers -1: must be an integer >= 0 (data loader "
                      "processes; 0 loads in the main process)"]
    assert not home.exists()


def test_window_and_flip_flags_without_their_switch_warn(capsys, home):
    # The run then stops on the missing weights: the warnings come first.
    code, errors, captured = run(capsys, "val", "--config", QUICK, "--device", "cpu",
                                 "--crop_size", "64", "64", "--stride", "32", "32",
                                 "--flip_horizontal", "--opts", *TINY)
    warnings = [line.split("[WARNING] ", 1)[1] for line in captured.out.splitlines()
                if "[WARNING]" in line]
    assert warnings == [
        "--crop_size/--stride given without --is_slide: ignored (add --is_slide to use them)",
        "--flip_horizontal given without --aug_eval: ignored (add --aug_eval to use it)"]
    assert code == 1 and errors[0].startswith("error: give --model_path")
