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
