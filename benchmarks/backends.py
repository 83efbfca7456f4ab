"""Images/second of each inference backend on DRIVE-sized images, full-width UNet, one run.

The same network (UNet, base_channels 64, 2 classes: the published DRIVE model's layout;
random weights unless --model_path) is exported once (static + ONNX, logits output) and run
whole-image on the same 584x565 images by

- paddle: eager Paddle (the training path);
- inference: the Paddle Inference predictor on the exported program;
- onnxruntime: ONNX Runtime, CPU execution provider, on model.onnx;

each with the same number of CPU threads (--threads, default 2). A backend first runs
one warm-up image, then --images timed ones; the preprocessing (Normalize) is done once
beforehand, so the figures are the network alone. Every backend's logits are compared
with eager's (max |difference|). The images are the DRIVE test images when --data points
at the shared data, else random pictures of the same size.

    python benchmarks/backends.py [--images 3] [--threads 2] [--data /path/to/shared/data]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DRIVE_HW = (584, 565)


def load_images(data_root: str, count: int) -> List[np.ndarray]:
    """DRIVE test images (RGB uint8) if present, else random 584x565 pictures."""
    from paddleseg_unet.datasets.image_io import read_image

    folder = os.path.join(data_root or "", "DRIVE", "test", "images")
    paths = [os.path.join(folder, f"{n:02d}_test.tif") for n in range(1, count + 1)]
    if data_root and all(os.path.isfile(p) for p in paths):
        return [read_image(p) for p in paths]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=DRIVE_HW + (3,), dtype=np.uint8) for _ in range(count)]


def time_backend(backend, batches: List[np.ndarray]) -> Dict[str, float]:
    import paddle

    backend(paddle.to_tensor(batches[0]))  # warm-up: graph optimisation, allocations
    outputs = []
    start = time.perf_counter()
    for x in batches:
        outputs.append(backend(paddle.to_tensor(x)).numpy())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": len(batches) / seconds,
            "outputs": outputs}


def main() -> None:
    default_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "shared", "data")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3, help="timed images per backend")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every backend")
    parser.add_argument("--base_channels", type=int, default=64, help="UNet width (64 = full)")
    parser.add_argument("--model_path", default=None, help="weights (path/URL/zoo name)")
    parser.add_argument("--data", default=os.environ.get("PADDLESEG_UNET_SHARED_DATA",
                                                         default_data))
    parser.add_argument("--backends", nargs="+", default=["paddle", "inference", "onnxruntime"])
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import paddle

    from paddleseg_unet.core.backends import build_backend
    from paddleseg_unet.core.export import export_model
    from paddleseg_unet.models.unet import UNet
    from paddleseg_unet.utils.device import setup_device
    from paddleseg_unet.utils.weights import load_weights

    setup_device("cpu", args.threads)
    paddle.seed(0)
    model = UNet(num_classes=2, base_channels=args.base_channels)
    if args.model_path:
        load_weights(model, args.model_path)
    model.eval()
    images = load_images(args.data, args.images)
    batches = [((img.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()
               for img in images]
    print(f"UNet base_channels={args.base_channels}, {len(images)} images of "
          f"{images[0].shape[1]}x{images[0].shape[0]}, {args.threads} threads per backend")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export_model(model, folder, num_classes=2, output_op="none",
                     onnx="onnxruntime" in args.backends)
        print(f"export (static + ONNX): {time.perf_counter() - start:.1f} s")
        results = {}
        for kind in args.backends:
            source = model if kind == "paddle" else folder
            results[kind] = time_backend(build_backend(kind, source, args.threads), batches)
    reference = results.get("paddle")
    base = reference["images_per_second"] if reference else None
    print(f"{'backend':<12} {'images/s':>9} {'s/image':>8} {'vs eager':>9} {'max |diff|':>11}")
    summary = {}
    for kind, r in results.items():
        diff = (max(float(np.abs(a - b).max()) for a, b in zip(r["outputs"],
                                                               reference["outputs"]))
                if reference else float("nan"))
        speedup = r["images_per_second"] / base if base else float("nan")
        print(f"{kind:<12} {r['images_per_second']:>9.3f} {1 / r['images_per_second']:>8.2f} "
              f"{speedup:>8.2f}x {diff:>11.2e}")
        summary[kind] = {"images_per_second": r["images_per_second"],
                         "seconds_per_image": 1 / r["images_per_second"],
                         "speedup_vs_eager": speedup, "max_abs_diff_vs_eager": diff}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"threads": args.threads, "images": len(images),
                       "image_hw": list(images[0].shape[:2]), "results": summary}, f, indent=1)


if __name__ == "__main__":
    main()
