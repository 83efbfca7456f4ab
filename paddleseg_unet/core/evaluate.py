"""Evaluate a model on a dataset: inference (whole / sliding / flip / multi-scale), mapped
back to the label's resolution, scored by one on-device accumulator for the whole set.

Multi-device (``paddle.distributed.launch``): each rank evaluates its share of the images and
the counters are summed once at the end, so every rank ends with the single-process result.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import paddle

from paddleseg_unet.core.infer import InferenceOptions, aug_inference
from paddleseg_unet.core.metrics import (MetricError, SegMetricAccumulator, binary_curves)
from paddleseg_unet.datasets.loader import build_dataloader
from paddleseg_unet.utils.io import atomic_write
from paddleseg_unet.utils.logger import logger

# Metric names as users type them (PaddleSeg's spelling) -> the accumulator's keys.
METRIC_ALIASES = {"miou": "miou", "mdice": "mdice", "dice": "mdice", "acc": "acc",
                  "kappa": "kappa", "auc": "auc_roc", "auc_roc": "auc_roc",
                  "vessel_dice": "dice_fg", "dice_fg": "dice_fg"}


class EvaluationError(Exception):
    """An evaluation that cannot be run as asked."""


@dataclass(frozen=True)
class EvalOptions:
    """What an evaluation computes and how it reads the data; built once per run from the
    config's ``test_config`` and the flags (:meth:`build`), passed whole to :func:`evaluate`.

    ``batch_size`` images of the same size (and preprocessing) share one forward pass.
    """

    inference: InferenceOptions = field(default_factory=InferenceOptions)
    auc_roc: bool = False
    use_fov: bool = False
    batch_size: int = 1
    num_workers: int = 0
    ignore_index: int = 255
    progress: bool = True
    per_image: bool = False  # one row of metrics per image (``results["per_image"]``)
    curves: bool = False  # ROC / PR points of a binary task (``results["curves"]``)

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_workers"):
            value, low = getattr(self, name), 1 if name == "batch_size" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EvaluationError(f"--{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def build(cls, test_config: Optional[Mapping[str, Any]] = None,
              inference: Optional[InferenceOptions] = None, **flags: Any) -> "EvalOptions":
        """``test_config`` (``auc_roc``, ``use_fov`` and the inference keys) with the given
        flags on top; a flag that is None is not given."""
        test_config = dict(test_config or {})
        values: Dict[str, Any] = {
            "inference": inference if inference is not None
            else InferenceOptions.build(test_config),
            "auc_roc": bool(test_config.get("auc_roc", False)),
            "use_fov": bool(test_config.get("use_fov", False))}
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> "EvalOptions":
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "inference"}
        out.update(self.inference.to_dict())
        return out


def metric_key(name: str) -> str:
    """The results key for a metric name such as ``mIoU``, ``Dice`` or ``AUC``."""
    return METRIC_ALIASES.get(name.lower(), name)


def _sample_fields(batch: Dict[str, Any], index: int) -> Dict[str, Any]:
    """One sample's label, fov and trans_info out of a val batch."""
    def pick(key: str) -> Any:
        value = batch.get(key)
        if value is None:
            return None
        return value[index]

    return {"label": pick("label"), "fov": pick("fov"), "trans_info": pick("trans_info")}


def _as_tensor(value: Any, dtype: str) -> paddle.Tensor:
    if isinstance(value, paddle.Tensor):
        return value.astype(dtype)
    return paddle.to_tensor(np.ascontiguousarray(value), dtype=dtype)


def _images(img: Any, start: int, stop: int) -> paddle.Tensor:
    """Images ``start:stop`` of a batch: a stacked tensor, or a list of CHW images."""
    if isinstance(img, paddle.Tensor):
        return img[start:stop]
    return paddle.stack([_as_tensor(v, "float32") for v in img[start:stop]])


def _forward_groups(batch: Dict[str, Any], n: int) -> List[Tuple[int, int]]:
    """Runs ``[start, stop)`` of samples that can share one forward pass: same image size,
    same preprocessing record (trans_info) and same label size."""
    def key(i: int) -> Any:
        img = batch["img"]
        shape = tuple(img.shape[1:]) if isinstance(img, paddle.Tensor) else tuple(img[i].shape)
        fields = _sample_fields(batch, i)
        label = fields["label"]
        trans = fields["trans_info"]
        return shape, tuple(label.shape[-2:]), repr(trans)

    keys = [key(i) for i in range(n)]
    groups, start = [], 0
    for i in range(1, n + 1):
        if i == n or keys[i] != keys[start]:
            groups.append((start, i))
            start = i
    return groups


def _image_scores(num_classes: int, options: "EvalOptions", logits: paddle.Tensor,
                  label: paddle.Tensor, mask: Optional[paddle.Tensor]) -> Dict[str, Any]:
    """One image's metrics, all pixels and (with use_fov) inside the mask (``fov_`` keys),
    by the same accumulator as the pooled figures."""
    scores: Dict[str, Any] = {}
    for prefix, region in (("", None), ("fov_", mask)):
        if prefix and not options.use_fov:
            continue
        acc = SegMetricAccumulator(num_classes, ignore_index=options.ignore_index,
                                   auc_roc=options.auc_roc)
        acc.update(logits, label, region)
        try:
            scores[prefix] = acc.compute()
        except MetricError:  # no scored pixel in this image (or region): no figures
            scores[prefix] = None
    return scores


def per_image_row(name: str, hw: Sequence[int], scores: Dict[str, Any],
                  class_names: Sequence[str]) -> Dict[str, Any]:
    """A CSV row: name, height, width, then per class IoU and Dice, and for two classes the
    foreground sensitivity, specificity, precision, F1 and AUC-ROC; the same again with a
    ``fov_`` prefix for the field of view."""
    row: Dict[str, Any] = {"name": name, "height": int(hw[0]), "width": int(hw[1])}
    slugs = [str(c).replace(" ", "_") for c in class_names]
    for prefix, res in scores.items():
        def get(key: str, i: Optional[int] = None) -> float:
            if res is None or key not in res:
                return math.nan
            return float(res[key][i] if i is not None else res[key])
        row[f"{prefix}miou"] = get("miou")
        row[f"{prefix}mdice"] = get("mdice")
        for i, slug in enumerate(slugs):
            row[f"{prefix}iou_{slug}"] = get("class_iou", i)
            row[f"{prefix}dice_{slug}"] = get("class_dice", i)
        if len(slugs) == 2:
            row[f"{prefix}sensitivity"] = get("sensitivity")
            row[f"{prefix}specificity"] = get("specificity")
            row[f"{prefix}precision"] = get("class_precision", 1)
            row[f"{prefix}f1"] = get("dice_fg")
            row[f"{prefix}auc_roc"] = get("auc_roc")
    return row


def summarize_rows(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Mean and standard deviation (ddof 1) over images of every numeric column, NaNs (an
    image where a figure is undefined) left out."""
    summary: Dict[str, Dict[str, float]] = {}
    for key in (rows[0] if rows else {}):
        if key in ("name", "height", "width"):
            continue
        values = np.array([r[key] for r in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        summary[key] = {"mean": float(values.mean()) if len(values) else math.nan,
                        "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                        "n": int(len(values))}
    return summary


def _gather_rows(rows: List[Dict[str, Any]], dataset: Any) -> List[Dict[str, Any]]:
    """Every rank's rows on every rank, in the dataset's order (as one process makes them)."""
    if paddle.distributed.get_world_size() > 1:
        gathered: List[Any] = []
        paddle.distributed.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    order = {rec.name: i for i, rec in enumerate(getattr(dataset, "records", []))}
    return sorted(rows, key=lambda r: (order.get(r["name"], len(order)), r["name"]))


ImageCallback = Callable[[Dict[str, Any]], None]


@paddle.no_grad()
def evaluate(model: Any, dataset: Any, num_classes: int,
             options: Optional[EvalOptions] = None, *,
             print_detail: bool = True,
             on_image: Optional[ImageCallback] = None) -> Dict[str, Any]:
    """Score ``model`` on ``dataset`` (mode ``val``) as ``options`` say and return every
    metric.

    ``model`` is a ``paddle.nn.Layer`` or any callable mapping an image batch to logits
    (e.g. an exported-model backend).

    The result holds the accumulator's metrics (``miou``, ``mdice``, ``acc``, ``kappa``,
    per-class lists, ``auc_roc`` and ``auc_error_bound`` when asked, ``dice_fg``,
    ``sensitivity`` and ``specificity`` for two classes) plus ``num_images``,
    ``num_pixels``, ``scored_region`` and ``seconds``; ``per_image`` rows and their
    ``per_image_summary`` with ``options.per_image``; ``curves`` with ``options.curves``.

    ``on_image`` is called with each image's ``name``, ``img_path``, ``logits``
    (``[1, K, H, W]`` at the label's size), ``label`` and ``fov``, in the same pass (e.g. to
    save its prediction).
    """
    options = options or EvalOptions()
    meta = getattr(dataset, "meta", None)
    class_names = list(meta.class_names) if meta is not None else [
        f"class_{i}" for i in range(num_classes)]
    rows: List[Dict[str, Any]] = []
    if isinstance(model, paddle.nn.Layer):
        model.eval()
    world_size = paddle.distributed.get_world_size()
    rank = paddle.distributed.get_rank()
    loader = build_dataloader(dataset, options.batch_size, mode="val",
                              num_workers=options.num_workers, rank=rank,
                              world_size=world_size)
    accumulator = SegMetricAccumulator(num_classes, ignore_index=options.ignore_index,
                                       auc_roc=options.auc_roc)
    region = "inside the field-of-view mask" if options.use_fov else "all pixels"
    if rank == 0 and print_detail:
        logger.info(f"Start evaluating (total_samples: {len(dataset)}, scoring {region}"
                    f"{', AUC-ROC on' if options.auc_roc else ''})...")
    bar = _progress(len(loader), rank == 0 and options.progress)
    num_images = 0
    start = time.perf_counter()
    for batch in loader:
        img = batch["img"]
        n = int(img.shape[0]) if isinstance(img, paddle.Tensor) else len(img)
        for first, stop in _forward_groups(batch, n):
            fields = [_sample_fields(batch, i) for i in range(first, stop)]
            labels = [_as_tensor(f["label"], "int64") for f in fields]
            hw = list(labels[0].shape[-2:])
            logits = aug_inference(model, _images(img, first, stop),
                                   options.inference, trans_info=fields[0]["trans_info"],
                                   ori_shape=tuple(hw))
            for j, (f, label) in enumerate(zip(fields, labels)):
                mask = None
                if options.use_fov:
                    if f["fov"] is None:
                        path = batch.get("img_path", ["?"] * n)[first + j]
                        raise EvaluationError(
                            f"use_fov: {type(dataset).__name__} has no field-of-view mask "
                            f"for {path}; evaluate all pixels instead (drop --use_fov / "
                            f"test_config.use_fov)")
                    mask = _as_tensor(f["fov"], "bool").reshape([1] + hw)
                one, label = logits[j:j + 1], label.reshape([1] + hw)
                accumulator.update(one, label, mask)
                name = batch["name"][first + j] if "name" in batch else str(num_images + first + j)
                if options.per_image:
                    scores = _image_scores(num_classes, options, one, label, mask)
                    rows.append(per_image_row(name, hw, scores, class_names))
                if on_image is not None:
                    on_image({"name": name, "img_path": batch["img_path"][first + j],
                              "logits": one, "label": label, "fov": f["fov"]})
        num_images += n
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    accumulator.all_reduce()
    results = accumulator.compute()
    counts = paddle.to_tensor([num_images], dtype="int64")
    if world_size > 1:
        paddle.distributed.all_reduce(counts)
    if meta is not None:
        results.update(class_names=list(meta.class_names),
                       foreground_class=meta.foreground_class)
    if options.per_image:
        results["per_image"] = _gather_rows(rows, dataset)
        results["per_image_summary"] = summarize_rows(results["per_image"])
    if options.curves:
        state = accumulator.state()
        if num_classes != 2 or "auc_hist" not in state:
            raise EvaluationError("ROC / PR curves are for two-class tasks evaluated with "
                                  "AUC-ROC (--auc_roc)")
        neg, pos = state["auc_hist"][0]
        results["curves"] = binary_curves(neg, pos)
    results.update(num_images=int(counts.item()), scored_region=region,
                   seconds=time.perf_counter() - start,
                   confusion_matrix=accumulator.state()["confusion_matrix"].tolist())
    if rank == 0 and print_detail:
        log_results(results)
    return results


def _progress(total: int, enabled: bool) -> Any:
    import sys

    if not (enabled and sys.stderr.isatty()):  # a bar in a log file is noise
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc="eval", dynamic_ncols=True, leave=False)


def log_results(results: Dict[str, Any]) -> None:
    """PaddleSeg's summary line and per-class table."""
    line = (f"[EVAL] #Images: {results['num_images']} mIoU: {results['miou']:.4f} "
            f"Acc: {results['acc']:.4f} Kappa: {results['kappa']:.4f} "
            f"Dice: {results['mdice']:.4f}")
    if "auc_roc" in results:
        line += f" Auc_roc: {results['auc_roc']:.4f}"
    logger.info(line)
    logger.info(f"[EVAL] Class IoU: \n{np.round(results['class_iou'], 4)}")
    logger.info(f"[EVAL] Class Precision: \n{np.round(results['class_precision'], 4)}")
    logger.info(f"[EVAL] Class Recall: \n{np.round(results['class_recall'], 4)}")
    if "dice_fg" in results:
        names = results.get("class_names") or ["background", "foreground"]
        logger.info(f"[EVAL] {names[1].capitalize()} (class 1) Dice: {results['dice_fg']:.4f} "
                    f"Sensitivity: {results['sensitivity']:.4f} "
                    f"Specificity: {results['specificity']:.4f}")
    if "auc_roc" in results:
        logger.info(f"[EVAL] AUC-ROC error bound (histogram): {results['auc_error_bound']:.2e}")
    if "average_precision" in results:
        best = results["best_f1"]
        logger.info(f"[EVAL] Average precision (PR-AUC): {results['average_precision']:.4f}; "
                    f"best F1 {best['f1']:.4f} at threshold {best['threshold']:.4f} "
                    f"(precision {best['precision']:.4f}, sensitivity "
                    f"{best['sensitivity']:.4f}, specificity {best['specificity']:.4f})")
    summary = results.get("per_image_summary")
    if summary:
        keys = [k for k in ("miou", "mdice", "f1", "auc_roc", "fov_f1", "fov_auc_roc")
                if k in summary]
        parts = [f"{k} {summary[k]['mean']:.4f} +- {summary[k]['std']:.4f}" for k in keys]
        logger.info(f"[EVAL] Per image (mean +- std over {len(results['per_image'])} images): "
                    + ", ".join(parts))
    logger.info(f"[EVAL] Scored {results['num_pixels']} pixels ({results['scored_region']}) "
                f"in {results['seconds']:.1f}s")


def save_results_json(results: Dict[str, Any], path: str, flags: Dict[str, Any]) -> None:
    """Write the results and the flags used, atomically."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    payload = clean(dict({k: v for k, v in results.items() if k != "curves"}, flags=flags))
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    logger.info(f"Metrics written to {path}")
