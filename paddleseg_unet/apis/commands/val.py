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
from typing import List, Optional


from paddleseg_unet.core.backends import add_backend_args
from paddleseg_unet.apis.cli import (add_config_args, add_inference_args,
                                     add_model_path_arg, check_args, inference_options,
                                     model_for_inference, start)


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
                        help="images per forward pass (images of the same size share one)")
    parser.add_argument("--save_json", default=None, help="write every metric to this JSON file")
    report = parser.add_argument_group("reports")
    report.add_argument("--per_image", default=None, metavar="FILE.csv",
                        help="write one row of metrics per image (mean +- std in the log)")
    report.add_argument("--save_dir", default=None,
                        help="save each prediction as predict.py does (and an error map for "
                             "two-class tasks), in the same pass")
    report.add_argument("--save_prob", action="store_true",
                        help="with --save_dir: also the foreground probability (16-bit PNG)")
    report.add_argument("--curves", default=None, metavar="DIR",
                        help="two-class tasks: ROC and precision-recall curves (CSV, PNG)")
    add_backend_args(parser)
    add_inference_args(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    check_args(args)  # flags, device and output paths, before any work
    import paddle

    from paddleseg_unet.core.backends import backend_from_args
    from paddleseg_unet.core.evaluate import EvalOptions, evaluate, save_results_json
    from paddleseg_unet.core.predict import PredictionWriter
    from paddleseg_unet.core.report import write_curves, write_per_image_csv
    from paddleseg_unet.utils.logger import logger

    cfg, builder = start(args, purpose="val")
    options = EvalOptions.build(cfg.test_config, inference_options(args, cfg.test_config),
                                auc_roc=True if args.curves else args.auc_roc,
                                use_fov=args.use_fov or None, batch_size=args.batch_size,
                                num_workers=args.num_workers,
                                per_image=bool(args.per_image) or None,
                                curves=bool(args.curves) or None)
    backend = backend_from_args(args)
    if backend is not None:  # --model_dir: the export's own preprocessing
        model, dataset = backend, builder.exported_val_dataset(backend, options.auc_roc)
    else:  # the dataset first: its labels are checked before weights load or export
        dataset = builder.val_dataset
        model = model_for_inference(args, cfg, builder)
    saver = (PredictionWriter.for_dataset(args.save_dir, dataset, save_prob=args.save_prob)
             if args.save_dir else None)
    results = evaluate(model, dataset, builder.num_classes, options,
                       on_image=saver.on_image if saver else None)
    if paddle.distributed.get_rank() != 0:
        return
    if args.per_image:
        write_per_image_csv(results["per_image"], args.per_image)
        logger.info(f"Per-image metrics written to {args.per_image}")
    if args.curves:
        paths = write_curves(results["curves"], args.curves, results)
        logger.info(f"Curves written to {', '.join(paths.values())}")
    if args.save_json:
        save_results_json(results, args.save_json, flags=dict(vars(args), **options.to_dict()))

