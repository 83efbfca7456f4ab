import os

import pytest

import paddleseg_unet
from paddleseg_unet.utils.device import cpu_threads, setup_device


@pytest.fixture
def cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(paddleseg_unet, "USER_OMP_NUM_THREADS", None)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    return 8


def test_all_cores_by_default_and_explicit_settings_win(cores, monkeypatch):
    assert cpu_threads() == 8
    assert cpu_threads(3) == 3
    monkeypatch.setattr(paddleseg_unet, "USER_OMP_NUM_THREADS", "2")
    assert cpu_threads() == 2
    monkeypatch.setattr(paddleseg_unet, "USER_OMP_NUM_THREADS", "junk")
    assert cpu_threads() == 8


@pytest.mark.parametrize("local_size,expected", [("2", 4), ("3", 2), ("16", 1), ("", 8), ("x", 8)])
def test_launched_processes_share_the_cores(cores, monkeypatch, local_size, expected):
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", local_size)
    assert cpu_threads() == expected
    assert cpu_threads(5) == 5  # --num_threads still wins


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="--device must be cpu, gpu or auto"):
        setup_device("tpu")
