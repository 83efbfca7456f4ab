"""Convert an official dataset download into the layout the toolkit trains on.

    python tools/convert_dataset.py {drive,stare,chasedb1,hrf,cityscapes} SRC DST [--force]
    python tools/convert_dataset.py folder --images DIR --masks DIR DST [options]

SRC: the extracted folder, a folder holding the downloaded archives, or one archive.
Your own images and masks: ``folder`` (``folder --help``). See docs/datasets.md and
docs/custom_data.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.commands.convert import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
