"""The five reference configs resolve to the values of the compat reference's tables."""
import os

import pytest

from paddleseg_unet.cvlibs.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RETINA_TRAIN = ["ResizeStepScaling", "RandomPaddingCrop", "RandomHorizontalFlip",
                "RandomVerticalFlip", "RandomDistort", "Normalize"]

# config name: (iters, dataset type, root, crop (w, h), loss, val transforms, classes, auc)
EXPECTED = {
    "unet_cityscapes_1024x512_160k": (160000, "Cityscapes", "data/cityscapes", [1024, 512],
                                      "CrossEntropyLoss", ["Normalize"], 19, None),
    "unet_drive_128x128_40k": (40000, "DRIVE", "data/DRIVE", [128, 128], "DiceLoss",
                               ["Normalize"], 2, True),
    "unet_stare_128x128_40k": (40000, "STARE", "data/STARE", [128, 128], "DiceLoss",
                               ["Normalize"], 2, True),
    "unet_chasedb1_128x128_40k": (40000, "CHASEDB1", "data/CHASE_DB1", [128, 128], "DiceLoss",
                                  ["Normalize"], 2, True),
    "unet_hrf_256x256_40k": (40000, "HRF", "data/HRF", [256, 256], "DiceLoss",
                             ["ResizeByLong", "Normalize"], 2, True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_config_effective_values(name):
    iters, ds_type, root, crop, loss, val_types, classes, auc = EXPECTED[name]
    cfg = load_config(os.path.join(REPO, "configs", "unet", name + ".yml"), purpose="train")
    cfg.validate("val")
    assert cfg.batch_size == 4 and cfg.iters == iters
    assert cfg["optimizer"] == {"type": "SGD", "momentum": 0.9, "weight_decay": 4.0e-5}
    assert cfg["lr_scheduler"] == {"type": "PolynomialDecay", "learning_rate": 0.01,
                                   "end_lr": 0, "power": 0.9}
    assert cfg["loss"] == {"types": [{"type": loss}], "coef": [1]}
    assert cfg["model"] == {"type": "UNet", "num_classes": classes, "use_deconv": False,
                            "pretrained": None}
    for split, mode in (("train_dataset", "train"), ("val_dataset", "val")):
        section = cfg[split]
        assert (section["type"], section["dataset_root"], section["mode"]) == (ds_type, root, mode)
    train_t = cfg["train_dataset"]["transforms"]
    expected_train = RETINA_TRAIN if classes == 2 else [
        t for t in RETINA_TRAIN if t != "RandomVerticalFlip"]
    assert [t["type"] for t in train_t] == expected_train
    assert train_t[0] == {"type": "ResizeStepScaling", "min_scale_factor": 0.5,
                          "max_scale_factor": 2.0, "scale_step_size": 0.25}
    assert train_t[1] == {"type": "RandomPaddingCrop", "crop_size": crop}
    distort = [t for t in train_t if t["type"] == "RandomDistort"][0]
    assert distort == {"type": "RandomDistort", "brightness_range": 0.4,
                       "contrast_range": 0.4, "saturation_range": 0.4}
    val_t = cfg["val_dataset"]["transforms"]
    assert [t["type"] for t in val_t] == val_types
    if "ResizeByLong" in val_types:
        assert val_t[0]["long_size"] == 1280
    assert cfg.test_config.get("auc_roc") is auc


@pytest.mark.parametrize("template,num_classes", [("unet_binary_custom", 2),
                                                  ("unet_multiclass_custom", 4)])
def test_custom_templates_match_what_the_folder_converter_writes(tmp_path, template,
                                                                 num_classes):
    """configs/custom/ and tools/convert_dataset.py folder give the same recipe; only the
    paths, the crop size and the class names depend on the data."""
    import cv2
    import numpy as np

    from paddleseg_unet.datasets.converters.folder import convert

    rng = np.random.default_rng(0)
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"),
                    rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{i}.png"),
                    rng.integers(0, num_classes, (64, 64), dtype=np.uint8))
    convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out", name="x")
    written = load_config(str(tmp_path / "out" / "unet_x.yml"), purpose="train").validate("val")
    cfg = load_config(os.path.join(REPO, "configs", "custom", template + ".yml"),
                      purpose="train").validate("val")
    assert cfg["model"]["num_classes"] == num_classes
    data = cfg.to_dict()
    for split, key in (("train_dataset", "train_path"), ("val_dataset", "val_path")):
        assert data[split][key] == key.split("_")[0] + "_list.txt"
        assert data[split]["dataset_root"] == "data/my_dataset"
        data[split][key] = str(tmp_path / "out" / data[split][key])
        data[split]["dataset_root"] = str(tmp_path / "out")
    data["train_dataset"]["transforms"][1]["crop_size"] = [64, 64]
    expected = written.to_dict()
    for split in ("train_dataset", "val_dataset"):
        assert len(data[split].pop("class_names")) == num_classes
        assert len(expected[split].pop("class_names")) == num_classes
    assert data == expected
