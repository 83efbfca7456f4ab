"""Draw the loss, learning-rate and evaluation curves of a training run into a PNG:
``python tools/plot_log.py output/vdl_log --out curves.png`` or
``python tools/plot_log.py output/train.log``.

Reads a VisualDL log folder (``Train/*`` and ``Evaluate/*`` scalars) or a text log with
``[TRAIN] epoch: E, iter: i/N, loss: x, lr: x, ...`` and ``[EVAL] #Images: N mIoU: x ...``
lines (an evaluation is placed at the iteration of the last [TRAIN] line before it).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.plot import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
