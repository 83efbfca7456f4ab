"""Device and CPU-thread setup, in one place for every tool."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import paddle

from paddleseg_unet.utils.logger import logger

_cpu_threads: Optional[int] = None  # None until set_cpu_threads is called


def cpu_threads(requested: Optional[int] = None) -> int:
    """Threads for CPU kernels: the request, else ``OMP_NUM_THREADS``, else the cores shared
    evenly among the processes ``paddle.distributed.launch`` started on this machine.
    (Paddle itself uses one thread unless told, which wastes most of a CPU machine.)"""
    if requested:
        return int(requested)
    from paddleseg_unet import USER_OMP_NUM_THREADS

    user = _positive_int(USER_OMP_NUM_THREADS)
    if user:
        return user
    processes = _positive_int(os.environ.get("PADDLE_LOCAL_SIZE")) or 1
    return max(1, (os.cpu_count() or 1) // processes)


def _positive_int(text: Optional[str]) -> Optional[int]:
    """``int(text)`` for a positive decimal string, else None (unset or malformed variables)."""
    return int(text) if text and text.isdigit() and int(text) > 0 else None


class DeviceError(ValueError):
    """A device that cannot be used here; the message says what to use instead."""


def check_device(device: str) -> str:
    """The device ``device`` (cpu, gpu or auto) resolves to, or a DeviceError."""
    if device not in ("auto", "cpu", "gpu"):
        raise DeviceError(f"--device must be cpu, gpu or auto, got {device!r}")
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        if paddle.device.is_compiled_with_cuda():
            raise DeviceError("--device gpu: Paddle was built with CUDA but sees no GPU (check "
                              "the driver and CUDA_VISIBLE_DEVICES); or use --device cpu")
        raise DeviceError("--device gpu: this Paddle build is CPU-only; use --device cpu, or "
                          "install paddlepaddle-gpu (pip install -e .[gpu]) on a CUDA machine")
    return "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"


def setup_device(device: str = "auto", num_threads: Optional[int] = None,
                 device_id: Optional[int] = None) -> str:
    """Select ``cpu``/``gpu`` (``auto``: a GPU when Paddle was built with CUDA and one is
    visible), set the CPU thread count, and return the device name Paddle reports.

    The GPU is ``device_id`` (PaddleSeg's ``--device_id``), else the one the launcher
    assigned this process (``FLAGS_selected_gpus``), else 0."""
    chosen = check_device(device)
    if device_id is not None and (isinstance(device_id, bool) or int(device_id) < 0):
        raise DeviceError(f"--device_id must be an integer >= 0, got {device_id!r}")
    if chosen == "gpu":
        count = paddle.device.cuda.device_count()
        if device_id is not None and int(device_id) >= count:
            raise DeviceError(f"--device_id {device_id}: Paddle sees {count} GPU(s), "
                              f"ids 0..{count - 1}")
        rank_gpu = int(device_id) if device_id is not None else int(
            os.environ.get("FLAGS_selected_gpus", "0").split(",")[0] or 0)
        paddle.set_device(f"gpu:{rank_gpu}")
    else:
        if device_id is not None:
            logger.warning(f"--device_id {device_id} is ignored: running on the CPU")
        paddle.set_device("cpu")
    threads = cpu_threads(num_threads)
    set_cpu_threads(threads)
    logger.info(f"Device: {paddle.get_device()}, CPU threads: {threads}")
    return paddle.get_device()


def is_gpu() -> bool:
    return paddle.get_device().startswith("gpu")


def set_cpu_threads(threads: int) -> None:
    """Threads for Paddle's CPU kernels (process-wide), remembered for ``current_cpu_threads``."""
    global _cpu_threads
    paddle.base.core.set_num_threads(int(threads))
    _cpu_threads = int(threads)


def current_cpu_threads() -> int:
    """What ``set_cpu_threads`` (or ``setup_device``) last set; 1 (Paddle's default) before."""
    return 1 if _cpu_threads is None else _cpu_threads


def configured_cpu_threads() -> Optional[int]:
    """What ``set_cpu_threads`` last set, or None if nothing set it (a library user's own
    script): then other runtimes (oneDNN's OpenMP) keep their own default."""
    return _cpu_threads


@contextlib.contextmanager
def cpu_threads_split(workers: int) -> Iterator[int]:
    """Give each of ``workers`` concurrent Python threads an equal share of the CPU threads
    for the duration of the block (yields the share); the previous setting comes back after."""
    before = current_cpu_threads()
    share = max(1, before // max(1, workers))
    set_cpu_threads(share)
    try:
        yield share
    finally:
        set_cpu_threads(before)
