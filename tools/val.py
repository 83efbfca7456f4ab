"""Evaluate weights on a config's val set:
``python tools/val.py --config configs/unet/unet_drive_128x128_40k.yml --model_path unet_drive_128x128_40k``.

``--model_path`` takes a file, an http(s) URL or a model-zoo name. An exported model
(tools/export.py) runs with ``--backend inference|onnxruntime --model_dir DIR``, with the
preprocessing of DIR/deploy.yaml. Metrics: mIoU, Acc,
Kappa, Dice (+ per class), vessel Dice / sensitivity / specificity for two classes, and
AUC-ROC (``--auc_roc`` or ``test_config.auc_roc``) from constant-memory histograms.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import run_cli  # noqa: E402,F401
from paddleseg_unet.apis.commands.val import main, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
