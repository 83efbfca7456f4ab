"""Peak host memory and time of binary AUC-ROC evaluation: histogram accumulator vs sklearn.

Two arms, each in its own child process so that ru_maxrss measures only that arm:

* ``ours``: SegMetricAccumulator(2, auc_roc=True) fed one image at a time (constant memory).
* ``sklearn``: the PaddleSeg way: keep every foreground probability and label in host memory,
  then sklearn.metrics.roc_auc_score. Kept lean (float32 probability + uint8 label per pixel;
  PaddleSeg itself keeps both softmax channels and int64 labels, i.e. more).

Images are synthetic HRF-sized (3504x2336) predictions: a sparse vessel-like label (random
polyline trees) and logits correlated with it (blurred signal + smooth and pixel noise),
generated per image from a seeded rng, identically in both arms.

Memory is reported as the child's peak RSS and as the increment over a common baseline (peak
RSS after imports and after generating one image and moving it to a paddle tensor, which both
arms do), i.e. what the metric itself costs. ``ours`` runs with N/3 and N images to show that
its memory does not grow with the set.

    python benchmarks/eval_auc_memory.py [--images 30]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def synth_image(seed: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(logits [1, 2, H, W] float32, label [1, H, W] uint8) for one synthetic fundus image."""
    import cv2

    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    scale = min(height, width) / 2336.0
    disc = (rng.uniform(0.3, 0.7) * width, rng.uniform(0.4, 0.6) * height)  # optic disc
    for k in range(6):  # vessel trees leave the disc, bend, thin out and branch
        stack = [(disc[0], disc[1], k * np.pi / 3 + rng.normal(0, 0.3), 16.0 * scale)]
        while stack:
            x, y, angle, thick = stack.pop()
            steps = rng.normal(0, 0.12, int(rng.integers(20, 45))).cumsum() + angle
            xs = x + np.cumsum(14 * scale * np.cos(steps))
            ys = y + np.cumsum(14 * scale * np.sin(steps))
            pts = np.stack([np.r_[x, xs], np.r_[y, ys]], 1)
            cv2.polylines(label, [np.round(pts).astype(np.int32)], False, 1, max(1, int(round(thick))))
            if thick > 1.5 * scale:
                for turn in (-0.5, 0.5):
                    stack.append((xs[-1], ys[-1], steps[-1] + turn + rng.normal(0, 0.2), thick * 0.72))
    # logit margin: blurred vessel signal + low-frequency error (cubic-upsampled coarse noise,
    # as models fail in patches) + pixel noise; all in place to keep generation cheap.
    d = cv2.GaussianBlur(label.astype(np.float32), (0, 0), 1.5 * scale + 0.5)
    d -= 0.35
    d *= 9.0
    coarse = rng.standard_normal((max(1, height // 16), max(1, width // 16)), dtype=np.float32)
    d += 0.8 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    d += rng.standard_normal((height, width), dtype=np.float32)
    logits = np.empty((1, 2, height, width), np.float32)
    np.multiply(d, 0.5, out=logits[0, 1])
    np.multiply(d, -0.5, out=logits[0, 0])
    return logits, label[None]


def child(arm: str, images: int, height: int, width: int, bins: int, seed: int) -> Dict[str, float]:
    import paddle

    sys.path.insert(0, REPO)
    from paddleseg_unet.core.metrics import SegMetricAccumulator

    paddle.set_device("cpu")
    warm_logits, warm_label = synth_image(seed - 1, height, width)
    paddle.to_tensor(warm_logits), paddle.to_tensor(warm_label)
    del warm_logits, warm_label
    base = _rss_mb()

    metric_s = 0.0
    t_all = time.perf_counter()
    if arm == "ours":
        acc = SegMetricAccumulator(2, ignore_index=255, auc_roc=True, auc_bins=bins)
        for i in range(images):
            logits, label = synth_image(seed + i, height, width)
            lt, lb = paddle.to_tensor(logits), paddle.to_tensor(label)
            t = time.perf_counter()
            acc.update(lt, lb)
            metric_s += time.perf_counter() - t
            # An evaluation loop holds one image at a time; without this the previous one
            # would still be alive while the next is generated.
            del logits, label, lt, lb
        t = time.perf_counter()
        acc.all_reduce()
        res = acc.compute()
        metric_s += time.perf_counter() - t
        auc, bound = res["auc_roc"], res["auc_error_bound"]
    else:
        from sklearn.metrics import roc_auc_score

        n_px = height * width
        probs = np.empty(images * n_px, np.float32)
        labels = np.empty(images * n_px, np.uint8)
        for i in range(images):
            logits, label = synth_image(seed + i, height, width)
            lt = paddle.to_tensor(logits)
            t = time.perf_counter()
            fg = paddle.nn.functional.softmax(lt, axis=1)[:, 1]
            probs[i * n_px:(i + 1) * n_px] = fg.numpy().reshape(-1)
            labels[i * n_px:(i + 1) * n_px] = label.reshape(-1)
            metric_s += time.perf_counter() - t
            del logits, label, lt, fg
        t = time.perf_counter()
        auc = float(roc_auc_score(labels, probs))
        metric_s += time.perf_counter() - t
        bound = 0.0
    return dict(arm=arm, images=images, auc=auc, bound=bound, base_rss_mb=base, peak_rss_mb=_rss_mb(),
                metric_s=metric_s, total_s=time.perf_counter() - t_all)


def _available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


def _run_child(args: argparse.Namespace, arm: str, images: int) -> Dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", arm, "--images", str(images),
           "--height", str(args.height), "--width", str(args.width), "--bins", str(args.bins),
           "--seed", str(args.seed)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child '{arm}' ({images} images) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=30, help="number of synthetic images (default 30)")
    ap.add_argument("--height", type=int, default=2336)
    ap.add_argument("--width", type=int, default=3504)
    ap.add_argument("--bins", type=int, default=65536, help="AUC histogram buckets")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children")
    ap.add_argument("--child", choices=["ours", "sklearn"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be >= 1")
    if args.child:
        print(json.dumps(child(args.child, args.images, args.height, args.width, args.bins, args.seed)))
        return

    # sklearn needs roughly 40 bytes per pixel at its peak (sort indices, copies, float64 cumsums).
    need_mb = 40.0 * args.images * args.height * args.width / 2**20
    if need_mb > 0.8 * _available_mb():
        raise SystemExit(f"the sklearn arm needs about {need_mb:.0f} MB but only {_available_mb():.0f} MB "
                         "are available; lower --images")
    small = max(1, args.images // 3)
    runs = [_run_child(args, "ours", small), _run_child(args, "ours", args.images),
            _run_child(args, "sklearn", args.images)]
    print(f"{args.images} images of {args.width}x{args.height} ({args.images * args.width * args.height / 1e6:.0f} "
          f"Mpx), {args.bins} bins, OMP_NUM_THREADS={args.threads}")
    print(f"{'arm':8} {'images':>6} {'AUC':>10} {'bound':>9} {'peak RSS MB':>12} {'+over base MB':>14} "
          f"{'metric s':>9} {'child s':>8}")
    for r in runs:
        print(f"{r['arm']:8} {r['images']:6d} {r['auc']:10.6f} {r['bound']:9.2e} {r['peak_rss_mb']:12.0f} "
              f"{r['peak_rss_mb'] - r['base_rss_mb']:14.0f} {r['metric_s']:9.1f} {r['total_s']:8.1f}")
    _, ours, ref = runs
    extra_ours = max(ours["peak_rss_mb"] - ours["base_rss_mb"], 1.0)
    extra_ref = ref["peak_rss_mb"] - ref["base_rss_mb"]
    print(f"|AUC ours - sklearn| = {abs(ours['auc'] - ref['auc']):.2e} (reported bound {ours['bound']:.2e})")
    print(f"peak RSS ratio ours/sklearn: {ours['peak_rss_mb'] / ref['peak_rss_mb']:.3f} "
          f"(1/{ref['peak_rss_mb'] / ours['peak_rss_mb']:.1f})")
    print(f"metric memory ratio (over common baseline): {extra_ours / extra_ref:.4f} (1/{extra_ref / extra_ours:.0f})")
    print(f"metric time ratio ours/sklearn: {ours['metric_s'] / ref['metric_s']:.2f}")
    print(f"ours growth {small} -> {args.images} images: "
          f"{runs[1]['peak_rss_mb'] - runs[0]['peak_rss_mb']:+.0f} MB peak RSS")


if __name__ == "__main__":
    main()
