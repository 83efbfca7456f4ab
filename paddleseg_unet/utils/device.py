"""Device and CPU-thread setup, in one place for every tool."""
from __future__ import annotations

import os
from typing import Optional

import paddle

from paddleseg_unet.utils.logger import logger


def cpu_threads(requested: Optional[int] = None) -> int:
    """Threads for CPU kernels: the request, else ``OMP_NUM_THREADS``, else every core.
    (Paddle itself uses one thread unless told, which wastes most of a CPU machine.)"""
    if requested:
        return int(requested)
    from paddleseg_unet import USER_OMP_NUM_THREADS

    env = USER_OMP_NUM_THREADS or ""
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


def setup_device(device: str = "auto", num_threads: Optional[int] = None) -> str:
    """Select ``cpu``/``gpu`` (``auto``: a GPU when Paddle was built with CUDA and one is
    visible), set the CPU thread count, and return the device name Paddle reports."""
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"--device must be cpu, gpu or auto, got {device!r}")
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise RuntimeError("--device gpu was asked for, but this Paddle build sees no CUDA GPU "
                           "(install paddlepaddle-gpu: pip install -e .[gpu]); use --device cpu")
    chosen = "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"
    if chosen == "gpu":
        rank_gpu = int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0] or 0)
        paddle.set_device(f"gpu:{rank_gpu}")
    else:
        paddle.set_device("cpu")
    threads = cpu_threads(num_threads)
    paddle.base.core.set_num_threads(threads)
    logger.info(f"Device: {paddle.get_device()}, CPU threads: {threads}")
    return paddle.get_device()


def is_gpu() -> bool:
    return paddle.get_device().startswith("gpu")
