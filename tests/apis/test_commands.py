"""The paddleseg-unet command: every tools/*.py script as a subcommand with the same flags,
configs by name, and the listing of packaged configs."""
import os
import re
import subprocess
import sys

import pytest

from paddleseg_unet.apis.commands import COMMANDS, main
from paddleseg_unet.cvlibs.config import ConfigError, load_config, packaged_configs, resolve_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc


@pytest.mark.parametrize("command", [c for c, (_, script) in COMMANDS.items() if script])
def test_each_command_has_the_help_of_its_script(command):
    script = COMMANDS[command][1]
    as_script = run(script, "--help")
    as_command = run("-m", "paddleseg_unet", command, "--help")
    assert as_script.returncode == as_command.returncode == 0, as_command.stderr
    # Only the usage paragraph differs (the program name, and so the line wrapping).
    bodies = [p.stdout.split("\n\n", 1)[1] for p in (as_script, as_command)]
    assert bodies[0] == bodies[1] and "--help" in bodies[0]
    assert as_command.stdout.startswith(f"usage: paddleseg-unet {command}")


def test_the_command_lists_commands_and_refuses_unknown_ones(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {c}" in out for c in COMMANDS)
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_configs_by_name(capsys):
    path = resolve_config("unet_drive_128x128_40k")
    assert path == os.path.join(REPO, "configs", "unet", "unet_drive_128x128_40k.yml")
    assert resolve_config("unet/unet_drive_128x128_40k.yml") == path
    assert resolve_config("quickstart/unet_synthetic_vessels").endswith(
        os.path.join("quickstart", "unet_synthetic_vessels.yml"))
    cfg = load_config("unet_hrf_256x256_40k", purpose="train")  # _base_ resolves beside it
    assert cfg["train_dataset"]["type"] == "HRF"
    with pytest.raises(ConfigError, match=r"neither a file nor a packaged config name"):
        resolve_config("unet_nowhere")
    assert "unet_small/unet16_drive_128x128_10.4k" in packaged_configs()
    assert not any(name.startswith("_base_") for name in packaged_configs())
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"unet/unet_drive_128x128_40k\s+DRIVE\s+128x128\s+40000\s+mIoU 82.12", out)
    assert re.search(r"unet/unet_cityscapes_1024x512_160k\s+Cityscapes\s+1024x512\s+160000", out)


def test_a_reader_that_stops_early_ends_the_listing_quietly():
    """``paddleseg-unet configs | grep -q ...``: the reader has left before the listing is
    written; the command stops with SIGPIPE's status and no traceback (it printed
    BrokenPipeError). The read end is closed before the command starts, so no timing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-c", "import sys; from paddleseg_unet.apis."
                               "commands import main; sys.exit(main(['configs']))"],
                              cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_paddleseg_flags_device_id_and_custom_color(log_lines):
    import numpy as np

    from paddleseg_unet.apis.cli import UsageError
    from paddleseg_unet.apis.commands.predict import custom_colors, parse_args
    from paddleseg_unet.utils.device import DeviceError, setup_device

    assert setup_device("cpu", 1, device_id=1) == "cpu"
    assert "--device_id 1 is ignored: running on the CPU" in log_lines
    with pytest.raises(DeviceError, match="--device_id must be an integer >= 0"):
        setup_device("cpu", 1, device_id=-1)
    args = parse_args(["--config", "C", "--image_path", "x.png", "--custom_color", "1", "2",
                       "3", "4", "5", "6", "--device_id", "0"])
    base = np.zeros((3, 3), np.uint8) + 9
    got = custom_colors(args.custom_color, base)
    assert got.tolist() == [[1, 2, 3], [4, 5, 6], [9, 9, 9]] and base.max() == 9
    with pytest.raises(UsageError, match="three per class"):
        custom_colors([1, 2], base)
    with pytest.raises(UsageError, match="4 colours for 3 classes"):
        custom_colors(list(range(12)), base)


@pytest.mark.parametrize("flags, train_config, expected", [
    ([], {}, (None, False)),
    (["--use_ema"], {}, (0.999, True)),
    ([], {"use_ema": True}, (0.999, True)),
    ([], {"use_ema": True, "ema_decay": 0.99}, (0.99, True)),
    (["--ema_decay", "0.9"], {"ema_decay": 0.99}, (0.9, False)),
    ([], {"ema_decay": 0.99}, (0.99, False)),
    (["--ema_decay", "0"], {"ema_decay": 0.99}, (0.0, False)),  # kept, for the range check
    ([], {"ema_decay": 0}, (0, False)),
])
def test_ema_settings_flags_over_train_config(flags, train_config, expected):
    from paddleseg_unet.apis.commands.train import ema_settings, parse_args

    assert ema_settings(parse_args(["--config", "C"] + flags), train_config) == expected
