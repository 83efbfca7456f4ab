"""Draw the loss, learning-rate and evaluation curves of a training run into a PNG:
``python tools/plot_log.py output/vdl_log --out curves.png`` or
``python tools/plot_log.py output/train.log``.

Reads a VisualDL log folder (``Train/*`` and ``Evaluate/*`` scalars) or a text log with
``[TRAIN] epoch: E, iter: i/N, loss: x, lr: x, ...`` and ``[EVAL] #Images: N mIoU: x ...``
lines (an evaluation is placed at the iteration of the last [TRAIN] line before it).
"""
from __future__ import annotations

import argparse
import os
from typing import List, Optional




def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="a VisualDL log folder (vdl_log) or a train.log text file")
    parser.add_argument("--out", default=None,
                        help="PNG to write (default: training_curves.png beside the log)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--smooth", type=int, default=1,
                        help="also draw a moving average of the loss over this many points")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    from paddleseg_unet.utils.visualize import plot_training_curves, read_training_curves

    out = args.out
    if out is None:
        folder = args.log if os.path.isdir(args.log) else os.path.dirname(args.log)
        out = os.path.join(folder or ".", "training_curves.png")
    curves = read_training_curves(args.log)
    panels = plot_training_curves(curves, out, title=args.title, smooth=args.smooth)
    counts = ", ".join(f"{k}: {len(v)} points" for section in curves.values()
                       for k, v in section.items())
    print(f"Wrote {out} ({', '.join(panels)}; {counts})")

