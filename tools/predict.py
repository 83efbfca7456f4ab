"""Predict masks for your own images:
``python tools/predict.py --config configs/unet/unet_drive_128x128_40k.yml
--model_path unet_drive_128x128_40k --image_path photos/ --save_dir output/result``.

``--image_path``: an image, a folder (searched recursively) or a .txt list of paths.
Per image NAME, under ``--save_dir``: ``pseudo_color_prediction/NAME.png`` (palette PNG,
pixel value = class id), ``added_prediction/NAME.jpg`` (colour mask over the image) and,
with ``--save_prob`` (two classes), ``probability/NAME.png`` (16-bit, value / 65535).
Unreadable images are skipped with a warning and listed at the end.

Exported models: ``--backend inference|onnxruntime --model_dir DIR`` (``--config`` is
then optional: preprocessing, classes and colours come from DIR/deploy.yaml).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.predict import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
