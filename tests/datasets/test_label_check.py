"""Build-time label checks (paddleseg_unet.datasets.label_check): 0/255 masks and
mostly-ignore labels stop with one clear error, absent classes warn; real data passes."""
import logging
import os
import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA
from paddleseg_unet.datasets import DRIVE, Cityscapes, Dataset, DatasetError, SyntheticVessels
from paddleseg_unet.datasets.label_check import IGNORE_MAJORITY, class_pixel_counts
from paddleseg_unet.utils.logger import logger


@pytest.fixture
def log_lines(caplog, monkeypatch):
    """Messages of the package logger (it does not propagate to pytest's by default)."""
    monkeypatch.setattr(logger, "propagate", True)
    caplog.set_level(logging.INFO, logger=logger.name)

    class Lines:
        def __iter__(self):
            return iter(caplog.messages)

        def clear(self):
            caplog.clear()

    return Lines()


def write_set(root, labels, mask_suffix="_mask"):
    """Images + the given label arrays as PNGs; one list file 'list.txt'."""
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "masks", exist_ok=True)
    lines = []
    for i, label in enumerate(labels):
        h, w = label.shape
        assert cv2.imwrite(str(root / "images" / f"{i}.jpg"), np.full((h, w, 3), 100, np.uint8))
        assert cv2.imwrite(str(root / "masks" / f"{i}{mask_suffix}.png"), label)
        lines.append(f"images/{i}.jpg masks/{i}{mask_suffix}.png")
    (root / "list.txt").write_text("\n".join(lines) + "\n")


def build(root, mode="train", num_classes=2):
    key = {"train": "train_path", "val": "val_path"}[mode]
    return Dataset(str(root), None, num_classes, mode, **{key: "list.txt"})


def vessel_masks(n=3, value=255, size=32):
    masks = []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        m[:, 4 + 3 * i: 7 + 3 * i] = value
        masks.append(m)
    return masks


@pytest.mark.parametrize("mode", ["train", "val"])
def test_zero_255_masks_stop_with_the_converter_command(tmp_path, mode):
    write_set(tmp_path, vessel_masks())
    with pytest.raises(DatasetError) as e:
        build(tmp_path, mode)
    msg = str(e.value)
    assert "\n" not in msg
    assert "list.txt line" in msg and os.path.join(str(tmp_path), "masks") in msg
    assert "holds only 0 and 255" in msg and "255 is the ignore value" in msg
    assert (f"python tools/convert_dataset.py folder --images {tmp_path / 'images'} "
            f"--masks {tmp_path / 'masks'} --mask_suffix _mask {tmp_path}_converted") in msg
    # The same masks as 0/1 are fine.
    write_set(tmp_path, vessel_masks(value=1))
    assert len(build(tmp_path, mode)) == 3


def test_ignore_majority_is_an_error_but_a_cityscapes_share_is_not(tmp_path):
    size = 20
    rows = round(0.6 * size)  # 60% ignore
    labels = []
    for i in range(2):
        m = np.zeros((size, size), np.uint8)
        m[:, :3] = 1
        m[:rows] = 255
        labels.append(m)
    write_set(tmp_path, labels)
    with pytest.raises(DatasetError) as e:
        build(tmp_path, "val")
    msg = str(e.value)
    assert "covers 60% of the pixels of 2 sampled labels" in msg and "'ignore'" in msg
    assert 0.4 < IGNORE_MAJORITY <= 0.6
    for m in labels:
        m[:] = 0
        m[:, :3] = 1
        m[:round(0.4 * size)] = 255  # 40%: more than any real Cityscapes frame we have
    write_set(tmp_path, labels)
    assert len(build(tmp_path, "val")) == 2


def test_absent_class_warns_in_train_mode_only(tmp_path, log_lines):
    labels = [np.zeros((16, 16), np.uint8) for _ in range(3)]
    for m in labels:
        m[:4] = 1
    write_set(tmp_path, labels)
    build(tmp_path, "train", num_classes=3)
    warned = [line for line in log_lines if "never occur" in line]
    assert len(warned) == 1
    assert "class 2 of 0..2 never occurs in the 3 training labels" in warned[0]
    assert str(tmp_path / "list.txt") in warned[0]
    log_lines.clear()
    build(tmp_path, "val", num_classes=3)
    build(tmp_path, "train", num_classes=2)
    assert not [line for line in log_lines if "never occur" in line]


def test_class_pixel_counts_matches_numpy():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 1, 2, 255], np.uint8), (9, 7))
    expected = [int((label == v).sum()) for v in (0, 1, 2, 255)]
    assert class_pixel_counts(label, 3, 255).tolist() == expected
    assert class_pixel_counts(label.astype(np.int32), 3, 255).tolist() == expected


def test_synthetic_set_passes_without_warnings(tmp_path, log_lines):
    for mode in ("train", "val"):
        SyntheticVessels(str(tmp_path / "syn"), num_images=4, image_size=64, mode=mode)
    assert not [line for line in log_lines if "never occur" in line]


def shared(name):
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"real data {path} is absent (set PADDLESEG_UNET_SHARED_DATA)")
    return path


def test_real_drive_and_cityscapes_pass(tmp_path, log_lines):
    from paddleseg_unet.datasets.converters import convert

    convert("drive", shared("DRIVE"), tmp_path / "DRIVE")
    for mode in ("train", "val"):
        DRIVE(dataset_root=str(tmp_path / "DRIVE"), mode=mode)
    assert not [line for line in log_lines if "never occur" in line]
    convert("cityscapes", shared("Cityscapes"), tmp_path / "cityscapes")
    for mode in ("train", "val"):  # 255 is common there, but far from "most"
        Cityscapes(str(tmp_path / "cityscapes"), mode=mode)
