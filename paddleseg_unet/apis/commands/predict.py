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
from __future__ import annotations

import argparse
from typing import Any, List, Optional


from paddleseg_unet.core.backends import add_backend_args
from paddleseg_unet.apis.cli import (UsageError, add_config_args,
                                     add_inference_args, add_model_path_arg,
                                     check_args, inference_options, model_for_inference,
                                     start)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    for action in parser._actions:  # an exported model's deploy.yaml can replace the config
        if action.dest == "config":
            action.required = False
            action.help += "; optional with --model_dir"
    add_model_path_arg(parser)
    parser.add_argument("--image_path", required=True,
                        help="an image file, a folder of images, or a .txt list of image paths")
    parser.add_argument("--save_dir", default="output/result", help="where to write results")
    parser.add_argument("--save_prob", action="store_true",
                        help="also write the foreground probability as a 16-bit PNG "
                             "(two-class models)")
    parser.add_argument("--overlay_weight", type=float, default=0.4,
                        help="weight of the colour mask in added_prediction (0..1)")
    parser.add_argument("--overlay_background", action="store_true",
                        help="blend the background class too (by default, when class 0 is "
                             "'background', its pixels keep the original image)")
    parser.add_argument("--custom_color", nargs="+", type=int, default=None,
                        metavar="R G B",
                        help="colours of the classes, three values per class from class 0 "
                             "(PaddleSeg's flag), e.g. 0 0 0 255 0 0; the rest keep theirs")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_backend_args(parser)
    add_inference_args(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args)  # flags, device and output paths, before any work
    from paddleseg_unet.core.backends import backend_from_args
    from paddleseg_unet.core.predict import PredictError, collect_images, predict
    from paddleseg_unet.datasets import SegDataset
    from paddleseg_unet.transforms import Compose
    from paddleseg_unet.utils.device import setup_device
    from paddleseg_unet.utils.logger import setup_logger
    from paddleseg_unet.utils.visualize import get_color_map

    if args.config is None and args.model_dir is None:
        raise UsageError("give --config (with --model_path), or --model_dir with an "
                         "exported model")
    if args.config is not None:
        cfg, builder = start(args, purpose="model")
    else:  # an exported model alone: its deploy.yaml is the config
        setup_logger()
        setup_device(args.device, args.num_threads, args.device_id)
        cfg = builder = None
    images, image_dir = collect_images(args.image_path)
    backend = backend_from_args(args)
    if backend is not None:
        deploy = backend.deploy
        model, transforms, num_classes = backend, backend.transforms(), deploy.num_classes
        colors = deploy.color_map if deploy.color_map is not None else get_color_map(num_classes)
        names = deploy.class_names or list(SegDataset.meta_for(num_classes).class_names)
    else:
        info = builder.deploy_info
        model = model_for_inference(args, cfg, builder)
        transforms, num_classes = Compose(info.transforms), info.num_classes
        colors, names = info.color_map, info.class_names
    if args.custom_color is not None:
        colors = custom_colors(args.custom_color, colors)
    summary = predict(model, transforms, images, args.save_dir, image_dir=image_dir,
                      num_classes=num_classes, color_map=colors,
                      overlay_weight=args.overlay_weight,
                      overlay_background=args.overlay_background or names[0] != "background",
                      save_prob=args.save_prob,
                      inference=inference_options(args, cfg.test_config if cfg else None),
                      progress=not args.no_progress)
    if not summary.written:
        raise PredictError(f"none of the {len(images)} image(s) could be read")


def custom_colors(values: List[int], colors: Any) -> Any:
    """``--custom_color R G B ...`` over the first classes of ``colors`` ([K, 3] uint8)."""
    import numpy as np

    from paddleseg_unet.apis.cli import UsageError

    if len(values) % 3 or not all(0 <= v <= 255 for v in values):
        raise UsageError(f"--custom_color takes R G B values in 0..255, three per class; got "
                         f"{len(values)} value(s): {values}")
    colors = np.array(colors, dtype=np.uint8, copy=True)
    given = np.asarray(values, dtype=np.uint8).reshape(-1, 3)
    if len(given) > len(colors):
        raise UsageError(f"--custom_color gives {len(given)} colours for {len(colors)} classes")
    colors[:len(given)] = given
    return colors
