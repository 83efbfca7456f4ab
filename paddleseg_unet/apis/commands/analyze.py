"""What a config's model costs at one input size:
``python tools/analyze_model.py --config configs/unet/unet_drive_128x128_40k.yml
--input_size 128 128 --json output/analyze.json``.

Prints the parameters (trainable / total), MACs and FLOPs per layer and in total, an
activation-memory estimate and the latency of each backend (eager Paddle; Paddle Inference
and ONNX Runtime on a temporary export) at that size. The counting conventions are in
``paddleseg_unet/core/analyze.py`` and docs/analyze.md.
"""
from __future__ import annotations

import argparse
from typing import List, Optional


from paddleseg_unet.apis.cli import add_config_args, check_args, start

BACKENDS = ("paddle", "inference", "onnxruntime")  # core.analyze.BACKEND_KINDS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--input_size", nargs=2, type=int, metavar=("W", "H"),
                      help="input width and height (batch 1, the model's channels); "
                           "default 512 512")
    size.add_argument("--input_shape", nargs=4, type=int, metavar=("N", "C", "H", "W"),
                      help="full input shape, e.g. 1 3 512 1024")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="backends to time (default: all three)")
    parser.add_argument("--no_latency", action="store_true", help="count only, time nothing")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per backend")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per backend (the median is reported)")
    parser.add_argument("--no_layers", action="store_true",
                        help="print the totals only, not the per-layer table")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the whole analysis (per layer too) as JSON")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    from paddleseg_unet.core.analyze import analyze_model, format_analysis, write_analysis_json

    check_args(args)  # an unwritable --json fails now, not after the timing
    cfg, builder = start(args, purpose="model")
    model = builder.model
    if args.input_shape:
        shape = args.input_shape
    else:
        width, height = args.input_size or (512, 512)
        shape = [1, int(getattr(model, "in_channels", 3)), height, width]
    analysis = analyze_model(model, shape, builder.num_classes,
                             backends=() if args.no_latency else args.backends,
                             warmup=args.warmup, repeats=args.repeats,
                             num_threads=args.num_threads)
    print(format_analysis(analysis, per_layer=not args.no_layers))
    if args.json:
        write_analysis_json(analysis, args.json, config=cfg.path)
        print(f"Wrote {args.json}")

