"""PaddleSeg-style script for ``paddleseg-unet convert``: the same function and flags
(:mod:`paddleseg_unet.apis.commands.convert`; ``python tools/convert_dataset.py --help``)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.commands.convert import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
