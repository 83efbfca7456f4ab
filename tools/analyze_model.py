"""What a config's model costs at one input size:
``python tools/analyze_model.py --config configs/unet/unet_drive_128x128_40k.yml
--input_size 128 128 --json output/analyze.json``.

Prints the parameters (trainable / total), MACs and FLOPs per layer and in total, an
activation-memory estimate and the latency of each backend (eager Paddle; Paddle Inference
and ONNX Runtime on a temporary export) at that size. The counting conventions are in
``paddleseg_unet/core/analyze.py`` and docs/analyze.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.analyze import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
