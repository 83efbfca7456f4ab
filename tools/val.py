"""Evaluate weights on a config's val set:
``python tools/val.py --config configs/unet/unet_drive_128x128_40k.yml --model_path unet_drive_128x128_40k``.

``--model_path`` takes a file, an http(s) URL or a model-zoo name. An exported model
(tools/export.py) runs with ``--backend inference|onnxruntime --model_dir DIR``, with the
preprocessing of DIR/deploy.yaml. Metrics: mIoU, Acc,
Kappa, Dice (+ per class), vessel Dice / sensitivity / specificity for two classes, and
AUC-ROC (``--auc_roc`` or ``test_config.auc_roc``) from constant-memory histograms.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.core.backends import add_backend_args  # noqa: E402
from paddleseg_unet.utils.cli import (add_config_args, add_inference_args, add_model_path_arg,  # noqa: E402
                                      apply_model_path, check_args, inference_options, run_cli)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_model_path_arg(parser)
    parser.add_argument("--allow_partial", action="store_true",
                        help="evaluate even if some weights are missing or mis-shaped")
    parser.add_argument("--auc_roc", default=None, type=lambda s: s.lower() in ("1", "true", "on", "yes"),
                        nargs="?", const=True, metavar="on|off",
                        help="compute AUC-ROC (default: test_config.auc_roc)")
    parser.add_argument("--use_fov", action="store_true",
                        help="score only pixels inside the dataset's field-of-view mask "
                             "(default: all pixels, as PaddleSeg scores them)")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--batch_size", type=int, default=1,
                        help="images per forward for whole-image evaluation of equal-sized images")
    parser.add_argument("--save_json", default=None, help="write every metric to this JSON file")
    add_backend_args(parser)
    add_inference_args(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args)  # flags, device and output paths, before any work
    import paddle

    from paddleseg_unet.core.backends import backend_from_args, exported_val_dataset
    from paddleseg_unet.core.evaluate import evaluate, save_results_json
    from paddleseg_unet.cvlibs.builder import SegBuilder
    from paddleseg_unet.cvlibs.config import load_config
    from paddleseg_unet.utils.device import setup_device
    from paddleseg_unet.utils.logger import setup_logger

    setup_logger(rank=paddle.distributed.get_rank())
    cfg = load_config(args.config, opts=args.opts, purpose="val")
    setup_device(args.device, args.num_threads)
    if paddle.distributed.get_world_size() > 1:
        paddle.distributed.init_parallel_env()
    builder = SegBuilder(cfg)
    options = inference_options(args, cfg.test_config)
    auc = args.auc_roc if args.auc_roc is not None else bool(cfg.test_config.get("auc_roc"))
    use_fov = args.use_fov or bool(cfg.test_config.get("use_fov", False))
    backend = backend_from_args(args)
    if backend is not None:
        model, dataset = backend, exported_val_dataset(builder, backend, auc)
    else:
        model, dataset = builder.model, builder.val_dataset
        apply_model_path(model, args.model_path, cfg["model"].get("pretrained"),
                         strict=not args.allow_partial)
    results = evaluate(model, dataset, builder.num_classes, auc_roc=auc,
                       use_fov=use_fov, num_workers=args.num_workers,
                       batch_size=args.batch_size, **options)
    if args.save_json and paddle.distributed.get_rank() == 0:
        save_results_json(results, args.save_json,
                          flags=dict(vars(args), auc_roc=auc, use_fov=use_fov, **options))


if __name__ == "__main__":
    sys.exit(run_cli(main))
