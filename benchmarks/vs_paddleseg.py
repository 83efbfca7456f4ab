"""Side by side with PaddleSeg itself (the ``paddleseg`` package): same weights, same images.

Sections (``--sections``, default all):

- ``eval``: the 20 DRIVE test images with AUC-ROC at full width. Ours: ``tools/val.py`` on
  the reference config (``--ours_backend auto``, val.py's default: its cached export;
  ``paddle`` eager; or ``inference`` / ``onnxruntime`` on a model exported here by
  ``tools/export.py``); PaddleSeg: ``paddleseg.core.evaluate``.
  mIoU and AUC must agree within 1e-4.
- ``train``: the reference DRIVE recipe (configs/unet/unet_drive_128x128_40k.yml: batch 4,
  128 px crops, Dice loss, SGD) for ``--train_iters`` iterations, ours ``tools/train.py``
  (``--to_static_training`` too with ``--ours_static``) vs ``paddleseg.core.train``.
- ``slide``: sliding-window logits of one full-resolution HRF image (3504x2336), 584 px
  windows every ``--stride`` px: ours (defaults: windows and threads within the memory
  budget) vs ``paddleseg.core.infer.slide_inference``; largest logit difference.

Every arm runs in its own process (this script with ``--arm``), so each arm's peak memory
is its own (VmHWM of /proc/self/status at the end) and the figures include what the arm
needs to start. Time is the arm's work inside its process (model build, data, the loop),
not the interpreter start-up. Rounds alternate the order of the arms; the ratio is the
median of the per-round ratios PaddleSeg time / our time (> 1: ours faster).
The weights are a PaddleSeg UNet (seed 0, BN statistics made non-trivial) saved once and
loaded by both arms. PaddleSeg 2.8's ``calculate_area`` concatenates 0-D tensors, which
Paddle 3 refuses; its arm replaces it by the same sums stacked (the only change), and wraps
``metrics.auc_roc`` to read the AUC that ``evaluate`` logs but does not return.

    python benchmarks/vs_paddleseg.py [--sections eval train slide] [--rounds 3]
        [--ours_backend auto|paddle|inference|onnxruntime] [--ours_static] [--quick]

``--quick``: 2 DRIVE images, 4 training iterations, a 584x974 corner of the HRF image (2
windows), one round: a smoke run of every arm, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from typing import Any, Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
CONFIG = os.path.join(ROOT, "configs", "unet", "unet_drive_128x128_40k.yml")
HRF_IMAGE = "01_dr.JPG"


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------ the arms
def _paddleseg_model(weights: str) -> Any:
    import paddle
    from paddleseg.models import UNet

    model = UNet(num_classes=2)
    model.set_state_dict(paddle.load(weights))
    return model


def _patch_paddleseg_calculate_area() -> None:
    import paddle
    import paddleseg.utils.metrics as metrics

    def calculate_area(pred, label, num_classes, ignore_index=255):
        if len(pred.shape) == 4:
            pred = paddle.squeeze(pred, axis=1)
        if len(label.shape) == 4:
            label = paddle.squeeze(label, axis=1)
        mask = label != ignore_index
        areas = [[], [], []]
        for i in range(num_classes):
            pred_i = paddle.logical_and(pred == i, mask)
            label_i = label == i
            for area, where in zip(areas, (paddle.logical_and(pred_i, label_i), pred_i,
                                           label_i)):
                area.append(paddle.sum(paddle.cast(where, "int64")))
        return tuple(paddle.stack(a) for a in areas)

    metrics.calculate_area = calculate_area


def arm_eval_paddleseg(spec: Dict[str, Any]) -> Dict[str, Any]:
    import paddleseg.transforms as T
    from paddleseg.core import evaluate
    from paddleseg.datasets import Dataset

    import paddleseg.utils.metrics as metrics

    _patch_paddleseg_calculate_area()
    auc_of = metrics.auc_roc
    seen: Dict[str, float] = {}

    def auc_roc(*args: Any, **kwargs: Any) -> float:  # evaluate logs it but returns it not
        seen["auc"] = float(auc_of(*args, **kwargs))
        return seen["auc"]

    metrics.auc_roc = auc_roc
    model = _paddleseg_model(spec["weights"])
    dataset = Dataset(mode="val", dataset_root=spec["root"],
                      val_path=os.path.join(spec["root"], "val_list.txt"),
                      transforms=[T.Normalize()], num_classes=2)
    miou, acc, _, _, _ = evaluate(model, dataset, auc_roc=True, print_detail=False)
    return {"miou": float(miou), "auc_roc": seen["auc"], "acc": float(acc)}


def _run_tool(script: str, argv: List[str]) -> None:
    saved = sys.argv
    sys.argv = [script] + argv
    try:
        runpy.run_path(os.path.join(ROOT, "tools", script), run_name="__main__")
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"tools/{script} exited with {exc.code}") from None
    finally:
        sys.argv = saved


def arm_eval_ours(spec: Dict[str, Any]) -> Dict[str, Any]:
    out = os.path.join(spec["work"], "ours_eval.json")
    argv = ["--config", CONFIG, "--model_path", spec["weights"], "--auc_roc", "on",
            "--num_threads", str(spec["threads"]), "--save_json", out,
            "--opts", f"val_dataset.dataset_root={spec['root']}"]
    argv += ["--backend", spec["backend"]]
    if spec["backend"] not in ("paddle", "auto"):
        argv += ["--model_dir", spec["model_dir"]]
    _run_tool("val.py", argv)
    with open(out) as f:
        results = json.load(f)
    metrics = results.get("metrics", results)
    return {"miou": float(metrics["miou"]), "auc_roc": float(metrics["auc_roc"]),
            "acc": float(metrics["acc"])}


def arm_train_paddleseg(spec: Dict[str, Any]) -> Dict[str, Any]:
    import paddle
    import paddleseg.transforms as T
    from paddleseg.core import train
    from paddleseg.datasets import Dataset
    from paddleseg.models.losses import DiceLoss

    import paddleseg.core.train as ps_train

    # After its loop PaddleSeg counts FLOPs (paddle.flops breaks on Paddle 3's 0-D tensors)
    # and sleeps 1 s: neither is training, both are left out of the timed arm.
    paddle.flops = lambda *args, **kwargs: None
    ps_train.time = types.SimpleNamespace(time=time.time, sleep=lambda seconds: None)
    iters = spec["iters"]
    model = _paddleseg_model(spec["weights"])
    transforms = [T.ResizeStepScaling(0.5, 2.0, 0.25), T.RandomPaddingCrop(crop_size=(128, 128)),
                  T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                  T.RandomDistort(brightness_range=0.4, contrast_range=0.4,
                                  saturation_range=0.4), T.Normalize()]
    dataset = Dataset(mode="train", dataset_root=spec["root"],
                      train_path=os.path.join(spec["root"], "train_list.txt"),
                      transforms=transforms, num_classes=2)
    lr = paddle.optimizer.lr.PolynomialDecay(0.01, decay_steps=iters, end_lr=0, power=0.9)
    optimizer = paddle.optimizer.Momentum(lr, parameters=model.parameters(), momentum=0.9,
                                          weight_decay=4.0e-5)
    train(model, dataset, optimizer=optimizer, save_dir=os.path.join(spec["work"], "ps_train"),
          # its log line indexes a 0-D loss, which Paddle 3 refuses: log_iters > iters skips it
          iters=iters, batch_size=4, save_interval=iters, log_iters=iters + 1,
          num_workers=0, losses={"types": [DiceLoss()], "coef": [1]},
          to_static_training=spec.get("static", False))
    return {}


def arm_train_ours(spec: Dict[str, Any]) -> Dict[str, Any]:
    iters = spec["iters"]
    argv = ["--config", CONFIG, "--iters", str(iters), "--save_interval", str(iters),
            "--log_iters", str(max(1, iters // 2)), "--num_threads", str(spec["threads"]),
            "--save_dir", os.path.join(spec["work"], "ours_train"),
            "--opts", f"train_dataset.dataset_root={spec['root']}",
            f"val_dataset.dataset_root={spec['root']}", f"model.pretrained={spec['weights']}"]
    if spec.get("static"):
        argv.append("--to_static_training")
    _run_tool("train.py", argv)
    return {}


def _hrf_tensor(spec: Dict[str, Any]) -> Any:
    import cv2
    import numpy as np
    import paddle

    img = cv2.imread(spec["image"], cv2.IMREAD_COLOR)[:, :, ::-1].astype("float32")
    h, w = spec.get("hw") or img.shape[:2]
    img = (img[:h, :w] / 255.0 - 0.5) / 0.5  # Normalize, as both configs
    return paddle.to_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))


def arm_slide_paddleseg(spec: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np
    import paddle
    from paddleseg.core.infer import slide_inference

    model = _paddleseg_model(spec["weights"])
    model.eval()
    img = _hrf_tensor(spec)
    with paddle.no_grad():
        logits = slide_inference(model, img, crop_size=spec["crop"], stride=spec["stride"])
    np.save(spec["out"], logits.numpy().astype("float32"))
    return {}


def arm_slide_ours(spec: Dict[str, Any]) -> Dict[str, Any]:
    import numpy as np

    from paddleseg_unet.core.infer import InferenceOptions, inference
    from paddleseg_unet.models import UNet
    from paddleseg_unet.utils.weights import load_weights

    model = UNet(num_classes=2)
    load_weights(model, spec["weights"])
    model.eval()
    img = _hrf_tensor(spec)
    logits = inference(model, img, InferenceOptions(
        is_slide=True, crop_size=spec["crop"], stride=spec["stride"],
        slide_memory_gb=spec.get("memory_gb")))
    np.save(spec["out"], logits.numpy())
    return {}


ARMS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    name[4:]: fn for name, fn in globals().items() if name.startswith("arm_")}


def run_arm(name: str, spec_path: str) -> None:
    """Child side: set the threads, run one arm, print one RESULT line."""
    with open(spec_path) as f:
        spec = json.load(f)
    sys.path.insert(0, ROOT)
    from paddleseg_unet.utils.device import setup_device
    from paddleseg_unet.utils.logger import logger

    setup_device("cpu", spec["threads"])
    logger.setLevel("WARNING")
    start = time.perf_counter()
    result = ARMS[name](spec)
    result.update(seconds=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------ the parent
def spawn(name: str, spec: Dict[str, Any], work: str) -> Dict[str, Any]:
    path = os.path.join(work, f"spec_{name}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--arm", name,
                           "--spec", path], capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"arm {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def rounds(arms: Dict[str, Dict[str, Any]], n: int, work: str, label: str
           ) -> Dict[str, List[Dict[str, Any]]]:
    """Run each arm once per round, the order alternating; print every round."""
    names = list(arms)
    results: Dict[str, List[Dict[str, Any]]] = {k: [] for k in names}
    for r in range(n):
        for name in (names if r % 2 == 0 else names[::-1]):
            results[name].append(spawn(name, arms[name], work))
        row = ", ".join(f"{k} {v[-1]['seconds']:.1f} s / {v[-1]['peak_rss_mb']:.0f} MB"
                        for k, v in results.items())
        print(f"[{label}] round {r + 1}: {row}", flush=True)
    return results


def summary(label: str, results: Dict[str, List[Dict[str, Any]]], theirs: str,
            ours: str) -> Dict[str, Any]:
    ratios = [t["seconds"] / o["seconds"] for t, o in zip(results[theirs], results[ours])]
    row = {"section": label, "paddleseg_s": statistics.median(r["seconds"] for r in results[theirs]),
           "ours_s": statistics.median(r["seconds"] for r in results[ours]),
           "speedup_median": statistics.median(ratios),
           "paddleseg_peak_mb": max(r["peak_rss_mb"] for r in results[theirs]),
           "ours_peak_mb": max(r["peak_rss_mb"] for r in results[ours])}
    print(f"[{label}] PaddleSeg {row['paddleseg_s']:.1f} s, peak {row['paddleseg_peak_mb']:.0f} MB"
          f" | ours {row['ours_s']:.1f} s, peak {row['ours_peak_mb']:.0f} MB | speed-up "
          f"(median of {len(ratios)} per-round ratios) {row['speedup_median']:.2f}x", flush=True)
    return row


def make_weights(path: str) -> None:
    import paddle
    from paddleseg.models import UNet

    paddle.seed(0)
    model = UNet(num_classes=2)
    # Non-trivial BN statistics, small means: positive means of 0.5-1 switch almost every
    # ReLU off and give a constant output (AUC 0.5 in both arms, a comparison of nothing).
    for name, value in model.state_dict().items():
        if name.endswith("_mean"):
            value.set_value((paddle.rand(value.shape) - 0.5) * 0.1)
        elif name.endswith("_variance"):
            value.set_value(paddle.rand(value.shape) * 0.5 + 0.5)
    paddle.save(model.state_dict(), path)


def drive_folder(work: str, images: Optional[int]) -> str:
    from paddleseg_unet.datasets.converters import convert

    root = os.path.join(work, "DRIVE")
    convert("drive", os.path.join(DATA, "DRIVE"), root)
    if images:  # only the evaluation list: PaddleSeg's trainer (drop_last) loops forever,
        # silently, on a train list shorter than one batch
        path = os.path.join(root, "val_list.txt")
        with open(path) as f:
            lines = f.read().splitlines()[:images]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
    return root


def export_model(weights: str, work: str, backend: str, threads: int) -> str:
    out = os.path.join(work, "exported")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "export.py"), "--config", CONFIG,
           "--model_path", weights, "--save_dir", out, "--num_threads", str(threads)]
    if backend == "onnxruntime":
        cmd.append("--onnx")
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=ROOT))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["eval", "train", "slide"],
                        choices=["eval", "train", "slide"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="Paddle CPU threads, both arms")
    parser.add_argument("--ours_backend", default="auto",
                        choices=["auto", "paddle", "inference", "onnxruntime"],
                        help="auto: val.py's default path (the cached export, made and "
                             "checked by val.py itself, inside the timed arm on its first "
                             "round); paddle: eager")
    parser.add_argument("--ours_static", action="store_true",
                        help="train section: --to_static_training in both arms")
    parser.add_argument("--train_iters", type=int, default=40)
    parser.add_argument("--stride", type=int, default=390, help="slide section window stride")
    parser.add_argument("--slide_memory_gb", type=float, default=None,
                        help="slide section: our --slide_memory_gb (default: the default)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, one round")
    parser.add_argument("--save_json", default=None, help="write the summary rows here")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        run_arm(args.arm, args.spec)
        return 0
    try:
        import paddleseg  # noqa: F401
    except ImportError:
        print("skipped: the paddleseg package is not installed "
              "(pip install --no-deps paddleseg==2.8.0)")
        return 0
    sys.path.insert(0, ROOT)
    n_rounds = 1 if args.quick else args.rounds
    work = tempfile.mkdtemp(prefix="vs_paddleseg_")
    rows = []
    try:
        weights = os.path.join(work, "unet.pdparams")
        make_weights(weights)
        base = {"weights": weights, "threads": args.threads, "work": work}
        print(f"{args.threads} Paddle threads per arm; load average "
              f"{os.getloadavg()[0]:.2f} at start; {n_rounds} round(s)", flush=True)
        if "eval" in args.sections or "train" in args.sections:
            root = drive_folder(work, 2 if args.quick else None)
        if "eval" in args.sections:
            spec = dict(base, root=root, backend=args.ours_backend)
            if args.ours_backend not in ("paddle", "auto"):
                spec["model_dir"] = export_model(weights, work, args.ours_backend, args.threads)
            results = rounds({"eval_paddleseg": spec, "eval_ours": spec}, n_rounds, work,
                             f"eval DRIVE, ours {args.ours_backend}")
            row = summary("eval", results, "eval_paddleseg", "eval_ours")
            theirs, ours = results["eval_paddleseg"][0], results["eval_ours"][0]
            row.update({f"{k}_diff": abs(theirs[k] - ours[k]) for k in ("miou", "auc_roc")},
                       miou=ours["miou"], auc_roc=ours["auc_roc"])
            print(f"[eval] mIoU {ours['miou']:.6f} vs {theirs['miou']:.6f}, AUC "
                  f"{ours['auc_roc']:.6f} vs {theirs['auc_roc']:.6f} (target: within 1e-4)")
            rows.append(row)
        if "train" in args.sections:
            spec = dict(base, root=root, iters=4 if args.quick else args.train_iters,
                        static=args.ours_static)
            results = rounds({"train_paddleseg": spec, "train_ours": spec}, n_rounds, work,
                             f"train {spec['iters']} iterations")
            row = summary("train", results, "train_paddleseg", "train_ours")
            rows.append(row)
        if "slide" in args.sections:
            import numpy as np

            spec = dict(base, image=os.path.join(DATA, "HRF", "images", HRF_IMAGE),
                        crop=[584, 584], stride=[args.stride, args.stride],
                        hw=[584, 974] if args.quick else None,
                        memory_gb=args.slide_memory_gb)
            arms = {"slide_paddleseg": dict(spec, out=os.path.join(work, "ps.npy")),
                    "slide_ours": dict(spec, out=os.path.join(work, "ours.npy"))}
            results = rounds(arms, n_rounds, work, f"slide HRF stride {args.stride}")
            row = summary("slide", results, "slide_paddleseg", "slide_ours")
            row["max_abs_logit_diff"] = float(np.abs(
                np.load(arms["slide_paddleseg"]["out"]) - np.load(arms["slide_ours"]["out"])).max())
            print(f"[slide] max |logit difference| {row['max_abs_logit_diff']:.2e}")
            rows.append(row)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        if args.save_json:
            with open(args.save_json, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
