"""SyntheticVessels: deterministic, fundus-like, generated once, read as a retina set."""
import os
import threading

import cv2
import numpy as np
import pytest

from paddleseg_unet.cvlibs.registry import DATASETS
from paddleseg_unet.datasets import DatasetError, RetinaDataset, SyntheticVessels

SMALL = dict(num_images=4, num_val=1, image_size=96)


def disk_arrays(root):
    """Every file of the set, read independently of the dataset code."""
    out = {}
    for folder in ("images", "annotations", "fov"):
        for split in ("train", "val"):
            d = os.path.join(root, folder, split)
            for name in sorted(os.listdir(d)):
                out[(folder, split, name)] = cv2.imread(os.path.join(d, name),
                                                        cv2.IMREAD_UNCHANGED)
    return out


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "s0")
    SyntheticVessels(dataset_root=root, **SMALL)
    return root


def test_layout_and_dataset(small_root):
    assert "SyntheticVessels" in DATASETS and issubclass(SyntheticVessels, RetinaDataset)
    assert SyntheticVessels.NUM_CLASSES == 2
    train = SyntheticVessels(dataset_root=small_root, **SMALL)
    val = SyntheticVessels(dataset_root=small_root, mode="val", **SMALL)
    assert len(train) == 3 and len(val) == 1
    with open(os.path.join(small_root, "val_list.txt")) as f:
        assert f.read().split() == ["images/val/synth_003.png", "annotations/val/synth_003.png"]
    s = val[0]
    assert s["img"].shape == (3, 96, 96) and s["img"].dtype == np.float32
    assert s["label"].shape == (96, 96) and s["fov"].shape == (96, 96)


def test_labels_fov_and_vessel_fraction(small_root):
    arrays = disk_arrays(small_root)
    for (folder, split, name), label in arrays.items():
        if folder != "annotations":
            continue
        img = arrays[("images", split, name)]
        fov = arrays[("fov", split, name)]
        assert img.shape == (96, 96, 3) and label.dtype == np.uint8
        assert set(np.unique(label)) == {0, 1} and set(np.unique(fov)) == {0, 1}
        assert not np.any(label[fov == 0])
        fraction = label.sum() / fov.sum()
        assert 0.08 <= fraction <= 0.14, (name, fraction)
        # vessels are darker than the retina around them (green channel, BGR on disk)
        green = img[..., 1].astype(float)
        assert green[label == 1].mean() < 0.85 * green[(fov == 1) & (label == 0)].mean()
        # outside the FOV it is dark
        assert img[fov == 0].mean() < 15


def test_deterministic_by_seed(small_root, tmp_path):
    again = str(tmp_path / "again")
    other = str(tmp_path / "other")
    SyntheticVessels(dataset_root=again, **SMALL)
    SyntheticVessels(dataset_root=other, seed=1, **SMALL)
    a, b, c = disk_arrays(small_root), disk_arrays(again), disk_arrays(other)
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a[("images", "train", "synth_000.png")],
                              c[("images", "train", "synth_000.png")])
    assert not np.array_equal(a[("annotations", "val", "synth_003.png")],
                              c[("annotations", "val", "synth_003.png")])


def test_cached_not_regenerated(small_root):
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(small_root) for f in fs]
    before = {f: os.stat(f).st_mtime_ns for f in files}
    SyntheticVessels(dataset_root=small_root, mode="val", **SMALL)
    assert {f: os.stat(f).st_mtime_ns for f in files} == before
    assert sorted(os.listdir(os.path.dirname(small_root))) == ["s0"]  # no temp leftovers


def test_default_root_and_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(tmp_path / "home"))
    ds = SyntheticVessels(num_images=3, num_val=1, image_size=64, seed=5)
    expected = tmp_path / "home" / "datasets" / "synthetic_vessels_n3_val1_s64_seed5_v1"
    assert ds.dataset_root == str(expected) and (expected / "train_list.txt").is_file()
    with pytest.raises(DatasetError, match="generated with"):
        SyntheticVessels(dataset_root=str(expected), num_images=3, num_val=1, image_size=64)
    with pytest.raises(DatasetError, match="num_val"):
        SyntheticVessels(num_images=3, num_val=3, image_size=64)


def test_concurrent_generation(tmp_path):
    root = str(tmp_path / "race")
    errors = []

    def build():
        try:
            SyntheticVessels(dataset_root=root, num_images=3, num_val=1, image_size=64)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(os.listdir(tmp_path)) == ["race"]
    assert len(SyntheticVessels(dataset_root=root, num_images=3, num_val=1, image_size=64)) == 2
