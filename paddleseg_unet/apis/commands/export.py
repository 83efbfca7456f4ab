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
from __future__ import annotations

import argparse
from typing import List, Optional


from paddleseg_unet.apis.cli import (add_config_args, add_model_path_arg,
                                     apply_model_path, check_args, start)

CHECK_TOLERANCE = 1e-4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--save_dir", default="output/inference_model",
                        help="folder to write the exported model into")
    add_model_path_arg(parser, "weights to export")
    parser.add_argument("--input_shape", nargs="+", type=int, default=None,
                        metavar="N C H W",
                        help="fixed input shape, e.g. 1 3 512 1024 (-1 = dynamic); "
                             "default: dynamic batch, height and width")
    parser.add_argument("--output_op", choices=["argmax", "softmax", "none"], default="argmax",
                        help="what the exported model returns: class ids (argmax, int32 "
                             "[N, H, W]), probabilities (softmax) or logits (none)")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx (needs paddle2onnx)")
    parser.add_argument("--opset_version", type=int, default=11, help="ONNX opset")
    parser.add_argument("--no_check", action="store_true",
                        help="skip comparing the exported model with the eager one")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args)  # flags, device and output paths, before any work
    from paddleseg_unet.core.backends import verify_export
    from paddleseg_unet.core.export import export_model
    from paddleseg_unet.utils.logger import logger

    cfg, builder = start(args, purpose="model")
    model = builder.model
    apply_model_path(model, args.model_path, cfg["model"].get("pretrained"))
    info = builder.deploy_info
    export_model(model, args.save_dir, num_classes=info.num_classes,
                 transforms=info.transforms, class_names=info.class_names,
                 color_map=info.color_map, input_shape=args.input_shape,
                 output_op=args.output_op, onnx=args.onnx, opset_version=args.opset_version)
    if not args.no_check:
        for kind, diff in verify_export(model, args.save_dir).items():
            verdict = "OK" if diff <= CHECK_TOLERANCE else "MISMATCH"
            line = f"Check {kind} vs eager: max |difference| {diff:.2e} ({verdict})"
            (logger.info if verdict == "OK" else logger.warning)(line)

