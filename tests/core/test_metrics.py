"""Tests for paddleseg_unet.core.metrics against independent numpy/sklearn computations."""
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest
from sklearn import metrics as skm

from paddleseg_unet.core.metrics import MetricError, SegMetricAccumulator, _count_into, confusion_matrix

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IGNORE = 255


# ---------------------------------------------------------------- independent references
def np_confusion(pred, label, k, mask=None):
    """cm[label, pred] over scored pixels, with np.add.at."""
    keep = label != IGNORE
    if mask is not None:
        keep &= mask.astype(bool)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (label[keep].astype(np.int64), pred[keep].astype(np.int64)), 1)
    return cm


def np_formulas(cm):
    """The compat formulas written out class by class."""
    k = cm.shape[0]
    total = cm.sum()
    iou, dice, prec, rec = [], [], [], []
    for i in range(k):
        inter, p, l = cm[i, i], cm[:, i].sum(), cm[i, :].sum()
        iou.append(1.0 if p + l - inter == 0 else inter / (p + l - inter))
        dice.append(0.0 if p + l == 0 else 2 * inter / (p + l))
        prec.append(0.0 if p == 0 else inter / p)
        rec.append(0.0 if l == 0 else inter / l)
    po = np.trace(cm) / total
    pe = sum(float(cm[:, i].sum()) * float(cm[i, :].sum()) for i in range(k)) / float(total) ** 2
    return dict(class_iou=iou, miou=np.mean(iou), class_dice=dice, mdice=np.mean(dice),
                class_precision=prec, class_recall=rec, acc=po, kappa=(po - pe) / (1 - pe))


def softmax_np(logits):
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def paddle_softmax(logits):
    """float32 probabilities exactly as the accumulator bins them (paddle's softmax)."""
    return paddle.nn.functional.softmax(paddle.to_tensor(logits), axis=1).numpy()


def pooled(arr_nkhw, label, mask=None):
    """[pixels, K] scores and [pixels] labels of the scored pixels."""
    keep = label != IGNORE
    if mask is not None:
        keep &= mask.astype(bool)
    return np.moveaxis(arr_nkhw, 1, -1)[keep], label[keep]


def structured_batch(rng, n, k, h, w, fg_frac=0.12, ignore_frac=0.02):
    """Labels with blob structure and smooth logits correlated with them."""
    yy, xx = np.mgrid[0:h, 0:w]
    label = np.zeros((n, h, w), np.int64)
    logits = np.zeros((n, k, h, w), np.float32)
    for b in range(n):
        # class regions from smooth random fields
        fields = [np.sin(xx / rng.uniform(5, 40) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(5, 40))
                  + 0.3 * rng.standard_normal() for _ in range(k)]
        f = np.stack(fields)
        if k == 2:
            thr = np.quantile(f[1], 1 - fg_frac)
            label[b] = (f[1] > thr).astype(np.int64)
        else:  # 4x4 blocks of random classes: every class present, sharp boundaries
            cells = rng.integers(0, k, (-(-h // 4), -(-w // 4)))
            label[b] = np.repeat(np.repeat(cells, 4, 0), 4, 1)[:h, :w]
        onehot = np.eye(k, dtype=np.float32)[label[b]].transpose(2, 0, 1)
        noise = rng.standard_normal((k, h, w)).astype(np.float32)
        logits[b] = 2.0 * onehot + 0.8 * f.astype(np.float32) + 1.2 * noise
    label[rng.random(label.shape) < ignore_frac] = IGNORE
    return logits, label


def run_acc(batches, k, auc=False, bins=65536):
    acc = SegMetricAccumulator(k, ignore_index=IGNORE, auc_roc=auc, auc_bins=bins)
    for item in batches:
        logits, label = item[0], item[1]
        mask = item[2] if len(item) > 2 else None
        acc.update(paddle.to_tensor(logits), paddle.to_tensor(label),
                   None if mask is None else paddle.to_tensor(mask))
    return acc


def assert_close_dict(res, ref, keys, tol=1e-12):
    for key in keys:
        np.testing.assert_allclose(np.asarray(res[key], float), np.asarray(ref[key], float),
                                   rtol=0, atol=tol, err_msg=key)


# ---------------------------------------------------------------- confusion matrix
def test_count_paths_agree_with_numpy_bincount():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 37, 5000)
    ref = np.bincount(idx, minlength=37) + 5
    for scatter in (False, True):
        got = _count_into(paddle.full([37], 5, "int64"), paddle.to_tensor(idx), scatter=scatter)
        np.testing.assert_array_equal(got.numpy(), ref)


def test_scatter_path_gives_the_same_state(monkeypatch):
    """The accelerator path (fixed-size scatter-add), forced on CPU, matches the CPU path."""
    import functools

    import paddleseg_unet.core.metrics as m

    rng = np.random.default_rng(13)
    batches = [structured_batch(rng, 2, k, 17, 19, ignore_frac=0.1) for k in (4, 4)]
    cpu = run_acc(batches, 4, auc=True, bins=512).state()
    monkeypatch.setattr(m, "_count_into", functools.partial(_count_into, scatter=True))
    scatter = run_acc(batches, 4, auc=True, bins=512).state()
    for key in ("confusion_matrix", "auc_hist", "unscored_pixels"):
        np.testing.assert_array_equal(cpu[key], scatter[key])


def test_confusion_matrix_matches_numpy_with_ignore_and_mask_odd_sizes():
    rng = np.random.default_rng(1)
    k = 5
    pred = rng.integers(0, k, (2, 37, 23))
    label = rng.integers(0, k, (2, 37, 23)).astype(np.uint8)
    label[rng.random(label.shape) < 0.1] = IGNORE
    mask = (rng.random(label.shape) < 0.7).astype(np.uint8)
    got = confusion_matrix(paddle.to_tensor(pred), paddle.to_tensor(label), k, IGNORE,
                           paddle.to_tensor(mask)).numpy()
    np.testing.assert_array_equal(got, np_confusion(pred, label, k, mask))
    # [N, 1, H, W] label layout and no mask
    got = confusion_matrix(paddle.to_tensor(pred), paddle.to_tensor(label[:, None]), k, IGNORE).numpy()
    np.testing.assert_array_equal(got, np_confusion(pred, label, k))


# ---------------------------------------------------------------- formulas
def test_k19_mixed_sizes_match_numpy_formulas_and_sklearn():
    rng = np.random.default_rng(2)
    k = 19
    batches = []
    for (n, h, w) in [(2, 17, 29), (1, 33, 21), (3, 9, 41)]:
        logits = rng.standard_normal((n, k, h, w)).astype(np.float32)
        label = rng.integers(0, k, (n, h, w))
        logits += 1.5 * np.moveaxis(np.eye(k, dtype=np.float32)[label], -1, 1)  # better than chance
        label[rng.random(label.shape) < 0.05] = IGNORE
        mask = rng.random(label.shape) < 0.8
        batches.append((logits, label, mask))
    res = run_acc(batches, k).compute()

    cm = sum(np_confusion(lg.argmax(1), lb, k, m) for lg, lb, m in batches)
    ref = np_formulas(cm)
    assert res["num_pixels"] == cm.sum()
    assert_close_dict(res, ref, ["class_iou", "miou", "class_dice", "mdice", "class_precision",
                                 "class_recall", "acc", "kappa"])

    y_true = np.concatenate([lb[(lb != IGNORE) & m] for lg, lb, m in batches])
    y_pred = np.concatenate([lg.argmax(1)[(lb != IGNORE) & m] for lg, lb, m in batches])
    labels = list(range(k))
    assert abs(res["kappa"] - skm.cohen_kappa_score(y_true, y_pred)) < 1e-12
    assert abs(res["acc"] - skm.accuracy_score(y_true, y_pred)) < 1e-12
    np.testing.assert_allclose(res["class_iou"], skm.jaccard_score(
        y_true, y_pred, labels=labels, average=None, zero_division=1.0), atol=1e-12)
    np.testing.assert_allclose(res["class_dice"], skm.f1_score(
        y_true, y_pred, labels=labels, average=None, zero_division=0.0), atol=1e-12)
    np.testing.assert_allclose(res["class_precision"], skm.precision_score(
        y_true, y_pred, labels=labels, average=None, zero_division=0.0), atol=1e-12)
    np.testing.assert_allclose(res["class_recall"], skm.recall_score(
        y_true, y_pred, labels=labels, average=None, zero_division=0.0), atol=1e-12)


def test_empty_class_conventions():
    k = 4
    # labels use classes 0 and 1 only; predictions use 0, 1 and 2; class 3 never appears.
    label = np.array([[[0, 0, 1, 1, 0, 1]]])
    pred = np.array([[[0, 2, 1, 0, 0, 2]]])
    logits = np.moveaxis(np.eye(k, dtype=np.float32)[pred], -1, 1) * 5
    res = run_acc([(logits, label)], k).compute()
    assert res["class_iou"][3] == 1.0       # empty union
    assert res["class_dice"][3] == 0.0      # empty union
    assert res["class_precision"][3] == 0.0 and res["class_recall"][3] == 0.0  # 0/0
    assert res["class_iou"][2] == 0.0 and res["class_recall"][2] == 0.0
    assert res["class_precision"][2] == 0.0  # predicted twice, never right
    assert_close_dict(res, np_formulas(np_confusion(pred, label, k)),
                      ["class_iou", "miou", "class_dice", "mdice", "class_precision", "class_recall",
                       "acc", "kappa"])


def test_binary_extras_and_fov_mask():
    rng = np.random.default_rng(3)
    logits, label = structured_batch(rng, 2, 2, 45, 39)
    mask = np.zeros(label.shape, bool)
    mask[:, 5:40, 4:35] = True
    res = run_acc([(logits, label, mask)], 2).compute()
    pred = logits.argmax(1)
    keep = mask & (label != IGNORE)
    yt, yp = label[keep], pred[keep]
    assert res["num_pixels"] == keep.sum()
    assert abs(res["dice_fg"] - skm.f1_score(yt, yp, pos_label=1)) < 1e-12
    assert abs(res["sensitivity"] - skm.recall_score(yt, yp, pos_label=1)) < 1e-12
    assert abs(res["specificity"] - skm.recall_score(yt, yp, pos_label=0)) < 1e-12
    assert abs(res["mdice"] - skm.f1_score(yt, yp, average="macro")) < 1e-12


def test_ignored_and_masked_pixels_do_not_matter():
    rng = np.random.default_rng(4)
    k = 3
    logits, label = structured_batch(rng, 2, k, 20, 31, ignore_frac=0.2)
    mask = rng.random(label.shape) < 0.75
    a = run_acc([(logits, label, mask)], k, auc=True, bins=256)
    out = (label == IGNORE) | ~mask
    scrambled = logits.copy()
    scrambled[np.broadcast_to(out[:, None], logits.shape)] = rng.normal(0, 50, out.sum() * k)
    b = run_acc([(scrambled, label, mask)], k, auc=True, bins=256)
    sa, sb = a.state(), b.state()
    np.testing.assert_array_equal(sa["confusion_matrix"], sb["confusion_matrix"])
    np.testing.assert_array_equal(sa["auc_hist"], sb["auc_hist"])
    assert sa["unscored_pixels"] == out.sum()
    # every scored pixel lands once in every one-vs-rest histogram
    assert (sa["auc_hist"].sum(axis=(1, 2)) == sa["confusion_matrix"].sum()).all()


def test_accumulating_batches_equals_one_big_batch():
    rng = np.random.default_rng(5)
    logits, label = structured_batch(rng, 4, 5, 13, 27)
    whole = run_acc([(logits, label)], 5, auc=True, bins=1024)
    parts = run_acc([(logits[i:i + 1], label[i:i + 1]) for i in range(4)], 5, auc=True, bins=1024)
    for key in ("confusion_matrix", "auc_hist"):
        np.testing.assert_array_equal(whole.state()[key], parts.state()[key])
    assert whole.compute() == parts.compute()


def np_auc_hist(logits, label, mask, bins):
    """[C, 2, bins] one-vs-rest (binary: foreground) histograms of paddle's softmax, numpy-binned."""
    probs, y = pooled(paddle_softmax(logits), label, mask)
    k = logits.shape[1]
    classes = [1] if k == 2 else range(k)
    hist = np.zeros((len(classes), 2, bins), np.int64)
    for c_i, c in enumerate(classes):
        bucket = np.clip((probs[:, c] * np.float32(bins)).astype(np.int64), 0, bins - 1)
        np.add.at(hist[c_i], ((y == c).astype(np.int64), bucket), 1)
    return hist


@pytest.mark.parametrize("k,chunk", [(4, 50), (4, 700), (2, 19), (2, 1)])
def test_chunked_updates_match_numpy(k, chunk):
    """Pieces of a few rows (chunk < one image) or of several images (chunk > one image) give
    the counts of an independent numpy computation over the whole batch."""
    rng = np.random.default_rng(21)
    logits, label = structured_batch(rng, 3, k, 17, 19, ignore_frac=0.1)
    mask = (rng.random(label.shape) < 0.8).astype(np.uint8)
    acc = SegMetricAccumulator(k, ignore_index=IGNORE, auc_roc=True, auc_bins=256, chunk_pixels=chunk)
    acc.update(paddle.to_tensor(logits), paddle.to_tensor(label), paddle.to_tensor(mask))
    st = acc.state()
    pred = logits.argmax(axis=1)
    np.testing.assert_array_equal(st["confusion_matrix"], np_confusion(pred, label, k, mask))
    np.testing.assert_array_equal(st["auc_hist"], np_auc_hist(logits, label, mask, 256))
    assert st["unscored_pixels"] == label.size - int((mask.astype(bool) & (label != IGNORE)).sum())


# ---------------------------------------------------------------- AUC
def _check_auc(res, exact):
    assert abs(res["auc_roc"] - exact) < 1e-4
    assert abs(res["auc_roc"] - exact) <= res["auc_error_bound"] + 1e-12


def test_binary_auc_random_predictions():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((2, 2, 61, 53)).astype(np.float32)
    label = rng.integers(0, 2, (2, 61, 53))
    label[rng.random(label.shape) < 0.05] = IGNORE
    res = run_acc([(logits, label)], 2, auc=True).compute()
    scores, y = pooled(paddle_softmax(logits), label)
    _check_auc(res, skm.roc_auc_score(y, scores[:, 1]))
    assert 0.45 < res["auc_roc"] < 0.55


def test_binary_auc_structured_200k_pixels_mixed_sizes_with_fov():
    rng = np.random.default_rng(7)
    batches = []
    for h, w in [(301, 257), (257, 301), (289, 263)]:  # ~230k pixels
        logits, label = structured_batch(rng, 1, 2, h, w)
        yy, xx = np.mgrid[0:h, 0:w]
        fov = ((yy - h / 2) / (0.48 * h)) ** 2 + ((xx - w / 2) / (0.48 * w)) ** 2 <= 1
        batches.append((logits, label, fov[None]))
    res = run_acc(batches, 2, auc=True).compute()
    scores32 = np.concatenate([pooled(paddle_softmax(lg), lb, m)[0][:, 1] for lg, lb, m in batches])
    scores64 = np.concatenate([pooled(softmax_np(lg), lb, m)[0][:, 1] for lg, lb, m in batches])
    y = np.concatenate([pooled(lg, lb, m)[1] for lg, lb, m in batches])
    assert y.size > 150_000 and 0.05 < y.mean() < 0.2
    _check_auc(res, skm.roc_auc_score(y, scores32))
    assert abs(res["auc_roc"] - skm.roc_auc_score(y, scores64)) < 1e-4
    assert 0.8 < res["auc_roc"] < 0.999


def test_coarse_bins_error_bound_holds_and_is_not_vacuous():
    rng = np.random.default_rng(8)
    logits, label = structured_batch(rng, 2, 2, 60, 70)
    res = run_acc([(logits, label)], 2, auc=True, bins=8).compute()
    scores, y = pooled(paddle_softmax(logits), label)
    exact = skm.roc_auc_score(y, scores[:, 1])
    err = abs(res["auc_roc"] - exact)
    assert 1e-4 < err <= res["auc_error_bound"] + 1e-12
    # the histogram AUC is the trapezoid under the bucketed ROC curve
    edges = np.minimum((scores[:, 1] * 8).astype(np.int64), 7)
    fpr, tpr, _ = skm.roc_curve(y, edges)
    assert abs(res["auc_roc"] - np.trapezoid(tpr, fpr)) < 1e-12


def test_multiclass_auc_macro_one_vs_rest():
    rng = np.random.default_rng(9)
    k = 19
    logits, label = structured_batch(rng, 2, k, 40, 50)
    res = run_acc([(logits, label)], k, auc=True).compute()
    probs, y = pooled(paddle_softmax(logits), label)
    assert len(np.unique(y)) == k
    per_class = [skm.roc_auc_score(y == c, probs[:, c]) for c in range(k)]
    np.testing.assert_allclose(res["class_auc_roc"], per_class, atol=1e-4)
    assert all(abs(a - e) <= b + 1e-12 for a, e, b in
               zip(res["class_auc_roc"], per_class, res["class_auc_error_bound"]))
    _check_auc(res, skm.roc_auc_score(y, probs.astype(np.float64), multi_class="ovr"))


def test_multiclass_auc_skips_classes_without_positives():
    rng = np.random.default_rng(10)
    k = 6
    logits, label = structured_batch(rng, 2, k, 30, 40)
    label[label == 4] = 0  # class 4 has no positive pixel: its AUC is undefined
    res = run_acc([(logits, label)], k, auc=True).compute()
    probs, y = pooled(paddle_softmax(logits), label)
    assert math.isnan(res["class_auc_roc"][4])
    kept = [skm.roc_auc_score(y == c, probs[:, c]) for c in range(k) if c != 4]
    _check_auc(res, float(np.mean(kept)))


def test_binary_auc_undefined_without_positives():
    logits = np.random.default_rng(11).standard_normal((1, 2, 5, 6)).astype(np.float32)
    res = run_acc([(logits, np.zeros((1, 5, 6), np.int64))], 2, auc=True).compute()
    assert math.isnan(res["auc_roc"]) and math.isnan(res["auc_error_bound"])


def test_nan_logits_do_not_corrupt_counters():
    logits = np.full((1, 2, 3, 4), np.nan, np.float32)
    acc = run_acc([(logits, np.ones((1, 3, 4), np.int64))], 2, auc=True, bins=16)
    st = acc.state()
    assert st["confusion_matrix"].sum() == 12 and st["auc_hist"].sum() == 12


# ---------------------------------------------------------------- errors and lifecycle
def test_bad_inputs_raise_clear_errors():
    acc = SegMetricAccumulator(3)
    with pytest.raises(MetricError, match="logits must have shape"):
        acc.update(paddle.zeros([1, 2, 4, 4]), paddle.zeros([1, 4, 4], "int64"))
    with pytest.raises(MetricError, match="label shape"):
        acc.update(paddle.zeros([1, 3, 4, 4]), paddle.zeros([1, 4, 5], "int64"))
    with pytest.raises(MetricError, match="no pixels"):
        acc.compute()
    acc.update(paddle.zeros([1, 3, 2, 2]), paddle.to_tensor([[[0, 7], [1, 255]]], "int64"))
    with pytest.raises(MetricError, match="1 labelled pixels have values outside 0..2"):
        acc.compute()


def test_all_reduce_single_process_is_noop_and_guarded():
    rng = np.random.default_rng(12)
    logits, label = structured_batch(rng, 1, 2, 10, 12)
    acc = run_acc([(logits, label)], 2, auc=True, bins=64)
    before = acc.state()
    acc.all_reduce()
    np.testing.assert_array_equal(before["auc_hist"], acc.state()["auc_hist"])
    with pytest.raises(MetricError, match="twice"):
        acc.all_reduce()
    with pytest.raises(MetricError, match="reset"):
        acc.update(paddle.to_tensor(logits), paddle.to_tensor(label))
    acc.reset()
    assert acc.state()["confusion_matrix"].sum() == 0


# ---------------------------------------------------------------- two CPU ranks
WORKER = textwrap.dedent('''
    import json, os, sys
    import numpy as np, paddle, paddle.distributed as dist
    from paddleseg_unet.core.metrics import SegMetricAccumulator
    dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from metrics_dist_data import batches
    out = {}
    for k in (2, 5):
        acc = SegMetricAccumulator(k, auc_roc=True, auc_bins=4096)
        for i, (lg, lb) in enumerate(batches(k)):
            if i % world == rank:  # each rank scores its half
                acc.update(paddle.to_tensor(lg), paddle.to_tensor(lb))
        acc.all_reduce()
        st = acc.state()
        out[k] = dict(world=world, cm=st["confusion_matrix"].tolist(),
                      hist=st["auc_hist"].tolist(), res=acc.compute())
    path = sys.argv[1] + f".rank{rank}"
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)
''')

DATA = textwrap.dedent('''
    import numpy as np
    def batches(k):
        rng = np.random.default_rng(100 + k)
        out = []
        for n, h, w in [(1, 17, 23), (2, 11, 9), (1, 30, 7), (3, 8, 8)]:
            lb = rng.integers(0, k, (n, h, w))
            lb[rng.random(lb.shape) < 0.1] = 255
            lg = rng.standard_normal((n, k, h, w)).astype("float32")
            out.append((lg, lb))
        return out
''')


def test_two_cpu_ranks_all_reduce_equals_single_process(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "metrics_dist_data.py").write_text(DATA)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    # CUDA_VISIBLE_DEVICES (even empty) makes the launcher pick the GPU device type and fail
    # on a CPU wheel; without it, it spawns CPU ranks on the gloo backend.
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = tmp_path / "result"
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(tmp_path / "log"), str(tmp_path / "worker.py"), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    logs = "".join(p.read_text()[-2000:] for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs

    sys.path.insert(0, str(tmp_path))
    try:
        from metrics_dist_data import batches
    finally:
        sys.path.remove(str(tmp_path))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"result.rank{rank}").read_text())
        for k in (2, 5):
            ref = run_acc(batches(k), k, auc=True, bins=4096)
            r = got[str(k)]
            assert r["world"] == 2
            assert r["cm"] == ref.state()["confusion_matrix"].tolist()
            assert r["hist"] == ref.state()["auc_hist"].tolist()
            assert r["res"] == json.loads(json.dumps(ref.compute()))


# ----------------------------------------------------------------------------- curves, AP
def _scores(seed, n=4000):
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.3).astype(np.int64)
    score = np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1 - 1e-7)
    return label, score


@pytest.mark.parametrize("bins", [64, 65536])
def test_average_precision_agrees_with_sklearn_within_the_stated_bound(bins):
    from sklearn.metrics import average_precision_score
    from paddleseg_unet.core.metrics import average_precision

    label, score = _scores(0)
    bucket = np.minimum((score * bins).astype(np.int64), bins - 1)
    neg = np.bincount(bucket[label == 0], minlength=bins)
    pos = np.bincount(bucket[label == 1], minlength=bins)
    ap, bound = average_precision(neg, pos)
    exact = average_precision_score(label, score)
    assert abs(ap - exact) <= bound + 1e-12
    if bins == 64:
        assert bound > 1e-3  # coarse buckets: a real, stated error
    else:
        assert bound < 1e-3


def test_roc_from_the_curve_points_integrates_to_the_histogram_auc():
    from sklearn.metrics import roc_auc_score
    from paddleseg_unet.core.metrics import _hist_auc, best_f1, binary_curves

    label, score = _scores(1)
    bins = 256
    bucket = np.minimum((score * bins).astype(np.int64), bins - 1)
    neg = np.bincount(bucket[label == 0], minlength=bins)
    pos = np.bincount(bucket[label == 1], minlength=bins)
    curves = binary_curves(neg, pos)
    trapezoid = float(np.sum(np.diff(curves["fpr"]) * (curves["tpr"][1:] + curves["tpr"][:-1])
                             / 2))
    auc, bound = _hist_auc(neg, pos)
    assert trapezoid == pytest.approx(auc, abs=1e-12)
    assert abs(auc - roc_auc_score(label, score)) <= bound + 1e-12
    assert curves["tpr"][0] == 0 and curves["tpr"][-1] == 1 and curves["fpr"][-1] == 1
    # Best F1 by brute force over the same thresholds (bucket lower edges).
    f1s = []
    for b in range(bins):
        predicted = bucket >= b
        tp = int((predicted & (label == 1)).sum())
        f1s.append(2 * tp / (predicted.sum() + (label == 1).sum()))
    best = best_f1(neg, pos)
    assert best["f1"] == pytest.approx(max(f1s), abs=1e-12)
    assert f1s[int(round(best["threshold"] * bins))] == pytest.approx(max(f1s), abs=1e-12)
