"""PaddleSeg-style script for ``paddleseg-unet plot``: the same function and flags
(:mod:`paddleseg_unet.apis.commands.plot`; ``python tools/plot_log.py --help``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.plot import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
