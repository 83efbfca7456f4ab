"""Export a model for deployment (no training code needed to run it):
``python tools/export.py --config configs/unet/unet_drive_128x128_40k.yml
--model_path unet_drive_128x128_40k --save_dir output/inference_model --onnx``.

Writes a Paddle static inference model (``model.json`` + ``model.pdiparams``, dynamic H and
W unless ``--input_shape`` fixes them), ``deploy.yaml`` (preprocessing, output op, class
names, colours) and, with ``--onnx``, ``model.onnx``. The exported outputs are then
compared with the eager model on a random input (``--no_check`` skips it).
Run it with ``tools/val.py`` / ``tools/predict.py --backend inference|onnxruntime
--model_dir DIR``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.export import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
