"""evaluate() against an independent computation: the model's logits mapped back by hand,
a numpy confusion matrix, the compat formulas and sklearn's AUC."""
import os

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from sklearn.metrics import roc_auc_score

from paddleseg_unet.core.evaluate import (EvalOptions, EvaluationError, evaluate,
                                          save_results_json)
from paddleseg_unet.core.infer import InferenceOptions
from paddleseg_unet.datasets import DRIVE, Dataset
from paddleseg_unet.models import UNet

QUIET = EvalOptions(progress=False)


def write_retina_layout(root, sizes, seed=0):
    """ROOT/{images,annotations,fov}/val/*.png + val_list.txt, images of different sizes."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "annotations", "fov"):
        os.makedirs(os.path.join(root, sub, "val"), exist_ok=True)
    lines = []
    for i, (h, w) in enumerate(sizes):
        name = f"im{i}.png"
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = (rng.random((h, w)) < 0.2).astype(np.uint8)
        label[0, :3] = 255  # a few ignore pixels
        yy, xx = np.mgrid[:h, :w]
        fov = (((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 < 0.8).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "images", "val", name), img[:, :, ::-1])
        cv2.imwrite(os.path.join(root, "annotations", "val", name), label)
        cv2.imwrite(os.path.join(root, "fov", "val", name), fov)
        lines.append(f"images/val/{name} annotations/val/{name}")
    for split in ("train", "val"):  # the prepared layout has both lists
        with open(os.path.join(root, f"{split}_list.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return root


def reference_scores(model, root, long_size=None):
    """Logits of the model per image (resized back by hand), scored with numpy/sklearn."""
    labels, preds, probs, fovs = [], [], [], []
    with open(os.path.join(root, "val_list.txt")) as f:
        pairs = [line.split() for line in f if line.strip()]
    for img_rel, lab_rel in pairs:
        img = np.ascontiguousarray(cv2.imread(os.path.join(root, img_rel))[:, :, ::-1])
        label = cv2.imread(os.path.join(root, lab_rel), cv2.IMREAD_UNCHANGED).astype(np.int64)
        fov = cv2.imread(os.path.join(root, lab_rel.replace("annotations", "fov")),
                         cv2.IMREAD_UNCHANGED)
        h, w = label.shape
        if long_size:
            scale = long_size / max(h, w)
            img = cv2.resize(img, (int(round(w * scale)), int(round(h * scale))),
                             interpolation=cv2.INTER_LINEAR)
        img = img.astype(np.float32)
        x = paddle.to_tensor(((img / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None])
        model.eval()
        with paddle.no_grad():
            logits = model(x)[0]
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        lg = logits.numpy()[0]
        preds.append(lg.argmax(0))
        e = np.exp(lg - lg.max(0))
        probs.append(e[1] / e.sum(0))
        labels.append(label)
        fovs.append(fov)
    return labels, preds, probs, fovs


def numpy_metrics(labels, preds, probs, masks=None, k=2):
    cm = np.zeros((k, k), np.int64)
    scores, truth = [], []
    for i, (lab, pred, prob) in enumerate(zip(labels, preds, probs)):
        keep = lab != 255
        if masks is not None:
            keep &= masks[i] > 0
        for a, b in zip(lab[keep], pred[keep]):
            cm[a, b] += 1
        scores.append(prob[keep])
        truth.append(lab[keep])
    inter = np.diag(cm)
    p, l = cm.sum(0), cm.sum(1)
    iou = inter / (p + l - inter)
    dice = 2 * inter / (p + l)
    total = cm.sum()
    po = inter.sum() / total
    pe = (p * l).sum() / total ** 2
    return {"miou": iou.mean(), "mdice": dice.mean(), "acc": po,
            "kappa": (po - pe) / (1 - pe), "dice_fg": dice[1],
            "auc_roc": roc_auc_score(np.concatenate(truth), np.concatenate(scores)),
            "num_pixels": total}


@pytest.fixture(scope="module")
def tiny_model():
    paddle.seed(3)
    return UNet(num_classes=2, base_channels=4)


@pytest.mark.parametrize("use_fov", [False, True])
def test_evaluate_matches_independent_scores_on_images_of_different_sizes(tmp_path, tiny_model,
                                                                          use_fov):
    root = write_retina_layout(str(tmp_path / "ds"), [(40, 52), (37, 45), (64, 48)])
    dataset = DRIVE(dataset_root=root, transforms=[{"type": "Normalize"}], mode="val")
    res = evaluate(tiny_model, dataset, 2, EvalOptions(auc_roc=True, use_fov=use_fov, progress=False))
    labels, preds, probs, fovs = reference_scores(tiny_model, root)
    ref = numpy_metrics(labels, preds, probs, fovs if use_fov else None)
    assert res["num_images"] == 3
    assert res["num_pixels"] == ref["num_pixels"]
    for key in ("miou", "mdice", "acc", "kappa", "dice_fg"):
        assert res[key] == pytest.approx(ref[key], abs=1e-9), key
    assert abs(res["auc_roc"] - ref["auc_roc"]) <= res["auc_error_bound"] + 1e-6
    assert res["scored_region"] == ("inside the field-of-view mask" if use_fov else "all pixels")


def test_resize_by_long_predictions_are_scored_at_label_resolution(tmp_path, tiny_model):
    root = write_retina_layout(str(tmp_path / "ds"), [(50, 70), (66, 44)], seed=1)
    transforms = [{"type": "ResizeByLong", "long_size": 96}, {"type": "Normalize"}]
    dataset = Dataset(dataset_root=root, transforms=transforms, num_classes=2, mode="val",
                      val_path=os.path.join(root, "val_list.txt"))
    res = evaluate(tiny_model, dataset, 2, QUIET)
    labels, preds, probs, _ = reference_scores(tiny_model, root, long_size=96)
    ref = numpy_metrics(labels, preds, probs)
    assert res["num_pixels"] == ref["num_pixels"]
    assert res["miou"] == pytest.approx(ref["miou"], abs=1e-9)


def test_flip_eval_with_scale_one_and_no_flips_equals_plain(tmp_path, tiny_model):
    root = write_retina_layout(str(tmp_path / "ds"), [(40, 40), (36, 44)], seed=2)
    dataset = DRIVE(dataset_root=root, transforms=[{"type": "Normalize"}], mode="val")
    plain = evaluate(tiny_model, dataset, 2, QUIET)
    aug = evaluate(tiny_model, dataset, 2, QUIET.replace(
        inference=InferenceOptions.build(aug=True, scales=[1.0])))
    assert aug["confusion_matrix"] == plain["confusion_matrix"]
    slide = evaluate(tiny_model, dataset, 2, QUIET.replace(inference=InferenceOptions(
        is_slide=True, crop_size=(64, 64), stride=(48, 48))))
    assert slide["confusion_matrix"] == plain["confusion_matrix"]


def test_use_fov_without_masks_is_a_clear_error(tmp_path, tiny_model):
    root = write_retina_layout(str(tmp_path / "ds"), [(32, 32)])
    dataset = Dataset(dataset_root=root, transforms=[{"type": "Normalize"}], num_classes=2,
                      mode="val", val_path=os.path.join(root, "val_list.txt"))
    with pytest.raises(EvaluationError, match="no field-of-view mask"):
        evaluate(tiny_model, dataset, 2, QUIET.replace(use_fov=True))


def test_results_json_holds_metrics_and_flags(tmp_path, tiny_model):
    import json
    root = write_retina_layout(str(tmp_path / "ds"), [(32, 40)])
    dataset = DRIVE(dataset_root=root, transforms=[{"type": "Normalize"}], mode="val")
    res = evaluate(tiny_model, dataset, 2, QUIET.replace(auc_roc=True))
    path = tmp_path / "out" / "m.json"
    save_results_json(res, str(path), flags={"auc_roc": True, "scales": [1.0]})
    data = json.loads(path.read_text())
    assert data["miou"] == pytest.approx(res["miou"])
    assert data["flags"] == {"auc_roc": True, "scales": [1.0]}
    assert len(data["class_iou"]) == 2 and "auc_error_bound" in data


def test_batched_forward_equals_one_image_at_a_time(tmp_path, tiny_model, monkeypatch):
    # Batch 3 over sizes [A, A, B | B, A]: images of one size next to each other share a
    # forward pass ([2, 1], then [1, 1]), and the scores equal five single-image passes.
    a, b = (40, 40), (36, 44)
    root = write_retina_layout(str(tmp_path / "ds"), [a, a, b, b, a], seed=5)
    dataset = DRIVE(dataset_root=root, transforms=[{"type": "Normalize"}], mode="val")
    calls = []
    forward = tiny_model.forward

    def counting_forward(x):
        calls.append(int(x.shape[0]))
        return forward(x)

    monkeypatch.setattr(tiny_model, "forward", counting_forward)
    single = evaluate(tiny_model, dataset, 2, QUIET.replace(auc_roc=True), print_detail=False)
    assert calls == [1] * 5
    calls.clear()
    batched = evaluate(tiny_model, dataset, 2, QUIET.replace(auc_roc=True, batch_size=3),
                       print_detail=False)
    assert calls == [2, 1, 1, 1]
    assert batched["confusion_matrix"] == single["confusion_matrix"]
    assert batched["num_images"] == 5
    assert batched["auc_roc"] == pytest.approx(single["auc_roc"], abs=1e-6)
