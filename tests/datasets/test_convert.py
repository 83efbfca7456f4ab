"""Tests for paddleseg_unet.datasets.converters: real data, archives built from it, errors.

Each real set is converted once per module (module-scoped fixtures); archive variants are
compared file-by-file with those conversions. Expected names, splits and label values are
computed here from the source files, independently of the converters.
"""
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paddleseg_unet.datasets.converters import ConversionError, common, convert, derive_fov

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PADDLESEG_UNET_SHARED_DATA", REPO.parent / "shared" / "data"))

DRIVE_TRAIN = [f"{n}_training" for n in range(21, 41)]
DRIVE_VAL = [f"{n:02d}_test" for n in range(1, 21)]
STARE_ALL = ["im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081",
             "im0082", "im0139", "im0162", "im0163", "im0235", "im0236", "im0239", "im0240",
             "im0255", "im0291", "im0319", "im0324"]
CHASE_TRAIN = [f"Image_{n:02d}{e}" for n in range(1, 11) for e in "LR"]
CHASE_VAL = [f"Image_{n:02d}{e}" for n in range(11, 15) for e in "LR"]
# The full HRF set: NN 01..15 of each category; 01..05 train, the rest test. The public
# copies have no label for 11_h, 12_h, 13_h.
HRF_UNLABELLED = ["11_h", "12_h", "13_h"]
HRF_ALL = sorted(f"{n:02d}_{c}" for n in range(1, 16) for c in ("dr", "g", "h"))
HRF_TRAIN = [n for n in HRF_ALL if int(n[:2]) <= 5]
HRF_VAL = [n for n in HRF_ALL if int(n[:2]) > 5 and n not in HRF_UNLABELLED]
# Cityscapes labelId -> trainId, by class name (cityscapesScripts' labels.py); others 255.
CITYSCAPES_CLASSES = {
    "road": (7, 0), "sidewalk": (8, 1), "building": (11, 2), "wall": (12, 3),
    "fence": (13, 4), "pole": (17, 5), "traffic light": (19, 6), "traffic sign": (20, 7),
    "vegetation": (21, 8), "terrain": (22, 9), "sky": (23, 10), "person": (24, 11),
    "rider": (25, 12), "car": (26, 13), "truck": (27, 14), "bus": (28, 15), "train": (31, 16),
    "motorcycle": (32, 17), "bicycle": (33, 18),
}


def data_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (set PADDLESEG_UNET_SHARED_DATA)")
    return path


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def load_gz(path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(gzip.open(path).read())))


def tree(root: Path) -> dict:
    """relative path -> sha1 of every file under root."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(dst: Path) -> list:
    return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name + "."))


def check_retina(dst: Path, train: list, val: list, check_pixels=True) -> dict:
    """Lists, files, label/FOV values; returns the vessel fractions computed from the files."""
    totals = np.zeros(4)
    for split, names in (("train", train), ("val", val)):
        lines = (dst / f"{split}_list.txt").read_text().splitlines()
        assert lines == [f"images/{split}/{n}.png annotations/{split}/{n}.png" for n in names]
        for kind in ("images", "annotations", "fov"):
            assert sorted(p.stem for p in (dst / kind / split).glob("*")) == sorted(names) \
                if names else not (dst / kind / split).exists()
        for name in names:
            with Image.open(dst / "images" / split / f"{name}.png") as im:
                assert im.mode == "RGB"
                w, h = im.size
            label = load(dst / "annotations" / split / f"{name}.png")
            fov = load(dst / "fov" / split / f"{name}.png")
            assert label.shape == fov.shape == (h, w)
            assert set(np.unique(label)) == {0, 1} and set(np.unique(fov)) == {0, 1}
            assert 0.5 < fov.mean() < 0.95, name
            totals += (label.size, label.sum(), fov.sum(), (label & fov).sum())
    return {"all": totals[1] / totals[0], "fov": totals[3] / totals[2]}


# ------------------------------------------------------------------- real conversions

@pytest.fixture(scope="module")
def drive_out(tmp_path_factory):
    dst = tmp_path_factory.mktemp("drive") / "out"
    return dst, convert("drive", data_dir("DRIVE"), dst)


@pytest.fixture(scope="module")
def stare_out(tmp_path_factory):
    dst = tmp_path_factory.mktemp("stare") / "out"
    return dst, convert("stare", data_dir("STARE"), dst)


@pytest.fixture(scope="module")
def chase_out(tmp_path_factory):
    dst = tmp_path_factory.mktemp("chase") / "out"
    return dst, convert("chasedb1", data_dir("CHASE_DB1"), dst)


def test_drive_real(drive_out):
    dst, summary = drive_out
    src = data_dir("DRIVE")
    assert summary.counts == {"train": 20, "val": 20}
    frac = check_retina(dst, DRIVE_TRAIN, DRIVE_VAL)
    assert abs(frac["all"] - 0.086) < 0.02 and abs(frac["fov"] - 0.125) < 0.02
    assert summary.stats["vessel_fraction"] == pytest.approx(frac["all"])
    assert summary.stats["vessel_fraction_in_fov"] == pytest.approx(frac["fov"])
    for split, folder, names in (("train", "training", DRIVE_TRAIN), ("val", "test", DRIVE_VAL)):
        for name in names:
            nn = name[:2]
            assert np.array_equal(load(dst / "annotations" / split / f"{name}.png"),
                                  load(src / folder / "1st_manual" / f"{nn}_manual1.gif") > 0)
            assert np.array_equal(load(dst / "fov" / split / f"{name}.png"),
                                  load(src / folder / "mask" / f"{name}_mask.gif") > 0)
    assert np.array_equal(load(dst / "images/train/21_training.png"),
                          load(src / "training/images/21_training.tif"))


def test_stare_real(stare_out):
    dst, summary = stare_out
    src = data_dir("STARE")
    names = sorted(STARE_ALL)
    frac = check_retina(dst, names[:10], names[10:])
    assert summary.counts == {"train": 10, "val": 10}
    assert abs(frac["all"] - 0.076) < 0.02
    for i, name in enumerate(names):
        split = "train" if i < 10 else "val"
        assert np.array_equal(load(dst / "annotations" / split / f"{name}.png"),
                              load_gz(src / "labels-ah" / f"{name}.ah.ppm.gz") > 0)
    assert np.array_equal(load(dst / "images/train/im0001.png"),
                          load_gz(src / "stare-images/im0001.ppm.gz"))


def test_chase_real(chase_out):
    dst, summary = chase_out
    src = data_dir("CHASE_DB1")
    frac = check_retina(dst, CHASE_TRAIN, CHASE_VAL)
    assert summary.counts == {"train": 20, "val": 8}
    assert abs(frac["all"] - 0.069) < 0.02
    for split, names in (("train", CHASE_TRAIN), ("val", CHASE_VAL)):
        for name in names:  # 1-bit PNGs
            assert np.array_equal(load(dst / "annotations" / split / f"{name}.png"),
                                  load(src / f"{name}_1stHO.png").astype(np.uint8))
    # The derived FOV must hold (nearly) all labelled vessels and no dark border pixels.
    label = load(dst / "annotations/train/Image_01L.png")
    fov = load(dst / "fov/train/Image_01L.png").astype(bool)
    red = load(src / "Image_01L.jpg")[..., 0]
    assert label[~fov].sum() < 0.01 * label.sum()
    assert (red[fov] < 5).mean() < 0.001 and (red[~fov] > 60).mean() < 0.001


def test_hrf_real(tmp_path):
    src = data_dir("HRF")
    dst = tmp_path / "out"
    summary = convert("hrf", src, dst)
    assert len(HRF_TRAIN) == 15 and len(HRF_VAL) == 27
    assert summary.counts == {"train": 15, "val": 27}
    assert summary.skipped == [f"{n}: no label file manual1/{n}.tif" for n in HRF_UNLABELLED]
    assert all(f"  skipped {n}: no label file" in summary.format() for n in HRF_UNLABELLED)
    frac = check_retina(dst, HRF_TRAIN, HRF_VAL)
    assert abs(frac["fov"] - 0.09) < 0.02
    for split, name in (("train", "02_g"), ("val", "14_h")):
        assert np.array_equal(load(dst / f"annotations/{split}/{name}.png"),
                              load(src / f"manual1/{name}.tif") > 0)
        assert np.array_equal(load(dst / f"fov/{split}/{name}.png"),
                              load(src / f"mask/{name}_mask.tif").max(axis=2) > 0)


def test_cityscapes_real(tmp_path):
    src = data_dir("Cityscapes")
    dst = tmp_path / "out"
    summary = convert("cityscapes", src, dst)
    assert summary.counts == {"train": 6, "val": 4}
    seen = set()
    for split, city, count in (("train", "aachen", 6), ("val", "frankfurt", 4)):
        stems = sorted(p.name[:-len("_leftImg8bit.png")]
                       for p in (src / "leftImg8bit" / split / city).glob("*_leftImg8bit.png"))
        assert len(stems) == count
        lines = (dst / f"{split}_list.txt").read_text().splitlines()
        assert lines == [f"leftImg8bit/{split}/{city}/{s}_leftImg8bit.png "
                         f"gtFine/{split}/{city}/{s}_gtFine_labelTrainIds.png" for s in stems]
        for stem in stems:
            gt = f"gtFine/{split}/{city}/{stem}_gtFine_"
            img = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
            assert (dst / img).read_bytes() == (src / img).read_bytes()
            assert (dst / (gt + "labelIds.png")).read_bytes() == \
                (src / (gt + "labelIds.png")).read_bytes()
            ids = load(src / (gt + "labelIds.png"))
            expected = np.full(ids.shape, 255, np.uint8)
            for label_id, train_id in CITYSCAPES_CLASSES.values():
                expected[ids == label_id] = train_id
            got = load(dst / (gt + "labelTrainIds.png"))
            assert got.dtype == np.uint8 and np.array_equal(got, expected)
            for label_id, train_id in ((7, 0), (26, 13), (0, 255), (1, 255), (9, 255)):
                if (ids == label_id).any():
                    seen.add(label_id)
                    assert (got[ids == label_id] == train_id).all()
    assert {7, 26, 1} <= seen  # road, car and ego vehicle occur in these frames


# ------------------------------------------------------------------- archives as SRC

def zip_tree(archive: Path, root: Path, folders, prefix: str = "") -> None:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for folder in folders:
            for path in sorted((root / folder).rglob("*")):
                if path.is_file():
                    zf.write(path, prefix + path.relative_to(root).as_posix())


def test_drive_two_zips_in_folder(drive_out, tmp_path):
    src = data_dir("DRIVE")
    archives = tmp_path / "downloads"
    archives.mkdir()
    zip_tree(archives / "training.zip", src, ["training"])
    zip_tree(archives / "test.zip", src, ["test"])
    dst = tmp_path / "out"
    convert("drive", archives, dst)
    assert tree(dst) == tree(drive_out[0])


def test_drive_single_zip_with_top_folder(drive_out, tmp_path):
    src = data_dir("DRIVE")
    archive = tmp_path / "DRIVE.zip"
    zip_tree(archive, src, ["training", "test"], prefix="DRIVE/")
    dst = tmp_path / "out"
    convert("drive", archive, dst)
    assert tree(dst) == tree(drive_out[0])
    assert leftovers(dst) == []


def test_stare_tars_ignore_unlabelled(stare_out, tmp_path):
    src = data_dir("STARE")
    archives = tmp_path / "downloads"
    archives.mkdir()
    with tarfile.open(archives / "stare-images.tar", "w") as tf:
        for path in sorted((src / "stare-images").glob("*.ppm.gz")):
            tf.add(path, path.name)
        tf.add(src / "stare-images/im0001.ppm.gz", "im0400.ppm.gz")  # unlabelled extra
    with tarfile.open(archives / "labels-ah.tar", "w") as tf:
        for path in sorted((src / "labels-ah").glob("*.ppm.gz")):
            tf.add(path, path.name)
    dst = tmp_path / "out"
    summary = convert("stare", archives, dst)
    assert summary.counts == {"train": 10, "val": 10}
    assert tree(dst) == tree(stare_out[0])
    assert not any("im0400" in p for p in tree(dst))


def test_chase_zip_force_replaces_dst(chase_out, tmp_path):
    src = data_dir("CHASE_DB1")
    archive = tmp_path / "CHASEDB1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.iterdir()):
            zf.write(path, path.name)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    with pytest.raises(ConversionError, match="not empty.*--force"):
        convert("chasedb1", archive, dst)
    assert (dst / "stale.txt").read_text() == "old"
    convert("chasedb1", archive, dst, force=True)
    assert tree(dst) == tree(chase_out[0])
    assert leftovers(dst) == []


def test_rerun_refused(chase_out):
    dst = chase_out[0]
    before = tree(dst)
    with pytest.raises(ConversionError, match="not empty.*--force"):
        convert("chasedb1", data_dir("CHASE_DB1"), dst)
    assert tree(dst) == before


# ------------------------------------------------------------------- errors

def chase_links(tmp_path: Path, omit=(), replace=None) -> Path:
    """A CHASE folder of symlinks to the real files, minus ``omit``, with replacements."""
    src = data_dir("CHASE_DB1")
    folder = tmp_path / "chase"
    folder.mkdir()
    for path in sorted(src.iterdir()):
        if path.name not in omit:
            (folder / path.name).symlink_to(path)
    for name, writer in (replace or {}).items():
        (folder / name).unlink()
        writer(folder / name)
    return folder


def test_missing_label_named(tmp_path):
    src = chase_links(tmp_path, omit=["Image_05R_1stHO.png"])
    dst = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"Image_05R_1stHO\.png") as info:
        convert("chasedb1", src, dst)
    assert "\n" not in str(info.value)
    assert not dst.exists() and leftovers(dst) == []


def test_wrong_size_label_named(tmp_path):
    src = chase_links(tmp_path, replace={
        "Image_01L_1stHO.png": lambda p: Image.new("1", (100, 90)).save(p)})
    dst = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"Image_01L_1stHO\.png is 100x90.*999x960"):
        convert("chasedb1", src, dst)
    assert not dst.exists() and leftovers(dst) == []


def test_unreadable_image_named(tmp_path):
    src = chase_links(tmp_path, replace={
        "Image_01L.jpg": lambda p: p.write_bytes(b"\xff\xd8 truncated")})
    with pytest.raises(ConversionError, match=r"cannot read image .*Image_01L\.jpg"):
        convert("chasedb1", src, tmp_path / "out")


def test_interrupted_conversion_leaves_no_dst(tmp_path, monkeypatch):
    src = chase_links(tmp_path)
    dst = tmp_path / "out"
    real_write = common.write_png
    written = []

    def failing_write(path, array):
        # Everything goes to the staging sibling, never under the DST name.
        assert path.relative_to(dst.parent).parts[0] == f"out.tmp-{os.getpid()}"
        assert not dst.exists() or tree(dst) == {"keep.txt": hashlib.sha1(b"old").hexdigest()}
        if len(written) == 7:
            raise RuntimeError("simulated crash")
        written.append(path)
        real_write(path, array)

    monkeypatch.setattr(common, "write_png", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert("chasedb1", src, dst)
    assert not dst.exists() and leftovers(dst) == []
    # With --force over an existing DST, a crash leaves the old DST untouched.
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    written.clear()
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert("chasedb1", src, dst, force=True)
    assert tree(dst) == {"keep.txt": hashlib.sha1(b"old").hexdigest()}
    assert leftovers(dst) == []


def hrf_links(tmp_path: Path, files) -> Path:
    src = data_dir("HRF")
    folder = tmp_path / "hrf"
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(src / rel)
    return folder


def test_hrf_unlabelled_reported_and_skipped(tmp_path):
    src = hrf_links(tmp_path, ["images/01_h.jpg", "manual1/01_h.tif", "mask/01_h_mask.tif",
                               "images/02_g.jpg", "mask/02_g_mask.tif"])
    dst = tmp_path / "out"
    dst.mkdir()  # an existing empty DST is fine without --force
    summary = convert("hrf", src, dst)
    assert summary.counts == {"train": 1, "val": 0}
    assert len(summary.skipped) == 1 and "02_g" in summary.skipped[0]
    assert "skipped 02_g" in summary.format()
    assert tree(dst).keys() == {"images/train/01_h.png", "annotations/train/01_h.png",
                                "fov/train/01_h.png", "train_list.txt", "val_list.txt"}


def test_hrf_missing_mask_named(tmp_path):
    src = hrf_links(tmp_path, ["images/03_dr.JPG", "manual1/03_dr.tif"])
    with pytest.raises(ConversionError, match=r"mask/03_dr_mask\.tif"):
        convert("hrf", src, tmp_path / "out")


def test_bad_arguments(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConversionError, match="not a zip or tar"):
        convert("drive", tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(ConversionError, match="does not exist"):
        convert("drive", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ConversionError, match="unknown dataset 'kitti'"):
        convert("kitti", tmp_path, tmp_path / "out")
    (tmp_path / "src").mkdir()
    with pytest.raises(ConversionError, match="would contain SRC"):
        convert("stare", tmp_path / "src", tmp_path, force=True)
    assert (tmp_path / "src").is_dir()
    with pytest.raises(ConversionError, match="STARE: missing file stare-images/im0001"):
        convert("stare", tmp_path / "src", tmp_path / "out")
    with pytest.raises(ConversionError, match="Cityscapes: no leftImg8bit"):
        convert("cityscapes", tmp_path / "src", tmp_path / "out")


def test_cli_one_line_error_and_exit_code(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")  # third-party import warnings aside
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools/convert_dataset.py"), "chasedb1",
         str(tmp_path / "nowhere"), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: SRC {tmp_path / 'nowhere'} does not exist"]


# ------------------------------------------------------------------- units

def test_source_discovery(tmp_path):
    """Plain, gzipped, zipped (with top folder) and tar.gz'd members; plain wins."""
    root = tmp_path / "src"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.ppm").write_bytes(b"plain-x")
    (root / "a" / "y.ppm.gz").write_bytes(gzip.compress(b"plain-y"))
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("TOP/x.ppm", b"zipped-x")
        zf.writestr("TOP/z.ppm", b"zipped-z")
        zf.writestr("__MACOSX/TOP/._z.ppm", b"junk")
    inner = tmp_path / "w.ppm.gz"
    inner.write_bytes(gzip.compress(b"tarred-w"))
    with tarfile.open(root / "pack.tar.gz", "w:gz") as tf:
        tf.add(inner, "./deep/w.ppm.gz")
    with common.Source(root) as source:
        found = source.index(r"(?:^|/)(?P<key>[a-z])\.ppm$")
        assert sorted(found) == ["w", "x", "y", "z"]
        assert {k: e.read() for k, e in found.items()} == {
            "w": b"tarred-w", "x": b"plain-x", "y": b"plain-y", "z": b"zipped-z"}
        assert found["w"].relpath == "deep/w.ppm" and found["z"].in_archive
    (root / "b").mkdir()
    (root / "b" / "x.ppm").write_bytes(b"second")
    with common.Source(root) as source:
        with pytest.raises(ConversionError, match="found twice"):
            source.index(r"(?:^|/)(?P<key>x)\.ppm$")


def test_read_binary_formats(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((12, 10)) > 0.7
    files = {}
    pal = Image.fromarray((~truth).astype(np.uint8), "P")  # index 0 = white: via palette
    pal.putpalette([250, 250, 250, 5, 5, 5] + [0] * 762)
    files["pal.gif"] = pal
    files["one.png"] = Image.fromarray(truth).convert("1")
    files["idx.png"] = Image.fromarray(truth.astype(np.uint8))  # 0/1 grey
    files["rgb.tif"] = Image.fromarray(np.repeat(truth[..., None] * np.uint8(255), 3, 2))
    files["grey.ppm"] = Image.fromarray(truth.astype(np.uint8) * 255)
    for name, image in files.items():
        image.save(tmp_path / name)
    with common.Source(tmp_path) as source:
        for entry in source.entries:
            got = common.read_binary(entry)
            assert got.dtype == np.uint8 and np.array_equal(got, truth), entry.relpath


def test_read_binary_drive_palette_gif():
    """DRIVE 2nd_manual: palette indices 0/1 mapped to near-black/near-white greys."""
    path = data_dir("DRIVE") / "test/2nd_manual/01_manual2.gif"
    indices = load(path)
    assert Image.open(path).mode == "P" and set(np.unique(indices)) == {0, 1}
    with common.Source(path.parent) as source:
        entry = source.index(r"(?P<key>01)_manual2\.gif$")["01"]
        assert np.array_equal(common.read_binary(entry), indices)


def test_derive_fov_synthetic_disc():
    rng = np.random.default_rng(1)
    h, w, cy, cx, r = 200, 240, 100, 118, 85
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img = rng.integers(0, 30, (h, w, 3)).astype(np.uint8)  # noisy dark border
    fundus = np.stack([rng.normal(160, 15, (h, w)), rng.normal(70, 10, (h, w)),
                       rng.normal(30, 5, (h, w))], -1).clip(0, 255).astype(np.uint8)
    img[disc] = fundus[disc]
    img[(abs(yy - cy) < 3) & disc] = (25, 10, 10)  # a dark vessel across the disc
    img[(yy - 80) ** 2 + (xx - 140) ** 2 < 100] = (8, 4, 4)  # a dark lesion (a hole)
    img[5:9, 5:9] = (200, 80, 30)  # a bright speck outside: not the largest component
    fov = derive_fov(img).astype(bool)
    iou = (fov & disc).sum() / (fov | disc).sum()
    assert iou > 0.97 and not fov[5:9, 5:9].any() and fov[80, 140] and fov[cy, cx]
