"""Effect of Gaussian-weighted sliding windows on the metrics, against uniform, with the
same weights and images, in one run (docs/evaluation.md, "Gaussian-weighted sliding
windows").

    python benchmarks/slide_weight_effect.py --config CONFIG --model_path WEIGHTS \\
        --crop_size 584 584 --stride 390 390 [--opts KEY=VALUE ...] [--max_images N]

The val set is evaluated at its labels' full resolution with sliding windows, once with
``--slide_weight uniform`` (PaddleSeg's mean) and once with ``gaussian``, by the same
(``--backend auto``) model; the script prints a markdown row per setting: mIoU, mDice,
the foreground Dice and AUC-ROC for two classes, and the pixel accuracy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddleseg_unet.apis.cli import add_config_args, model_for_inference, start  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--crop_size", nargs=2, type=int, required=True, metavar=("W", "H"))
    parser.add_argument("--stride", nargs=2, type=int, required=True, metavar=("W", "H"))
    parser.add_argument("--slide_batch", type=int, default=4)
    parser.add_argument("--max_images", type=int, default=None,
                        help="evaluate only the first N images of the val set")
    parser.add_argument("--backend", choices=["auto", "paddle"], default="auto")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from paddleseg_unet.core.evaluate import EvalOptions, evaluate
    from paddleseg_unet.core.infer import InferenceOptions

    cfg, builder = start(args, purpose="val")
    dataset = builder.val_dataset
    if args.max_images:
        dataset.records = dataset.records[:args.max_images]
    model = model_for_inference(args, cfg, builder)
    k = builder.num_classes
    print(f"| slide weight | images | mIoU | mDice | Acc |"
          + (" fg Dice | AUC-ROC |" if k == 2 else "") + " seconds |")
    print("|---|---|---|---|---|" + ("---|---|" if k == 2 else "") + "---|")
    for weight in ("uniform", "gaussian"):
        options = EvalOptions(InferenceOptions(is_slide=True, crop_size=tuple(args.crop_size),
                                               stride=tuple(args.stride),
                                               slide_batch=args.slide_batch,
                                               slide_weight=weight),
                              auc_roc=k == 2, progress=False)
        start_time = time.perf_counter()
        res = evaluate(model, dataset, k, options, print_detail=False)
        row = (f"| {weight} | {res['num_images']} | {100 * res['miou']:.2f} | "
               f"{100 * res['mdice']:.2f} | {100 * res['acc']:.2f} |")
        if k == 2:
            row += f" {100 * res['dice_fg']:.2f} | {100 * res['auc_roc']:.2f} |"
        print(row + f" {time.perf_counter() - start_time:.0f} |", flush=True)


if __name__ == "__main__":
    main()
