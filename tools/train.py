"""Train a UNet from a config: ``python tools/train.py --config configs/unet/unet_drive_128x128_40k.yml``.

Multi-device: ``python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py ...``
(``--batch_size`` is per device).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.train import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
