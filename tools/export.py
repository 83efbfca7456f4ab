"""PaddleSeg-style script for ``paddleseg-unet export``: the same function and flags
(:mod:`paddleseg_unet.apis.commands.export`; ``python tools/export.py --help``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.export import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
