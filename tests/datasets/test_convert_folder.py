"""tools/convert_dataset.py folder: pairing, splits, mask formats, the generated config
(which trains and scores foreground), and the same on real DRIVE turned into a user's folder.

Expected labels are built here from the arrays the masks were written from (or, for JPEG,
from an OpenCV decode of the file), independently of the converter.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import SHARED_DATA
from paddleseg_unet.datasets.converters import ConversionError
from paddleseg_unet.datasets.converters.folder import convert, crop_size_for, default_name

REPO = Path(__file__).resolve().parents[2]
DRIVE_SRC = Path(SHARED_DATA) / "DRIVE"
TINY = ["--opts", "model.base_channels=4"]


def run_tool(*args, check=True):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def vessel_pair(rng, h=64, w=64):
    """A dark image with bright lines and the lines' 0/1 label."""
    label = np.zeros((h, w), np.uint8)
    for _ in range(3):
        p, q = rng.integers(0, min(h, w), 2), rng.integers(0, min(h, w), 2)
        cv2.line(label, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 1, 3)
    image = rng.integers(0, 50, (h, w, 3), dtype=np.uint8)
    image[label == 1] += 160
    return image, label


def write_folder(root, labels_to_file, n=6, suffix="", ext=".png", seed=0, h=64, w=64):
    """n image/mask pairs; ``labels_to_file(label, path_without_ext)`` writes each mask.
    Returns {name: 0/1 label}."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n):
        image, label = vessel_pair(rng, h, w)
        name = f"img{i:02d}"
        assert cv2.imwrite(str(root / "images" / f"{name}.jpg"), image)
        labels_to_file(label, root / "masks" / f"{name}{suffix}", ext)
        labels[name] = label
    return labels


def grey(value=255):
    def write(label, stem, ext):
        assert cv2.imwrite(str(stem) + ext, (label * value).astype(np.uint8))
    return write


def lists(dst):
    return {split: [line.split() for line in (dst / f"{split}_list.txt").read_text().splitlines()]
            for split in ("train", "val")}


def converted_labels(dst):
    out = {}
    for lines in lists(dst).values():
        for image_rel, label_rel in lines:
            out[Path(image_rel).stem] = np.asarray(Image.open(dst / label_rel))
    return out


# ------------------------------------------------------------------------ formats

@pytest.mark.parametrize("value,description", [(255, "binary 0/255"), (1, "binary 0/1")])
def test_binary_masks_become_zero_one(tmp_path, value, description):
    labels = write_folder(tmp_path, grey(value), suffix="_mask")
    summary = convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out",
                      mask_suffix="_mask")
    got = converted_labels(tmp_path / "out")
    assert sorted(got) == sorted(labels)
    for name, label in labels.items():
        np.testing.assert_array_equal(got[name], label)
    text = summary.format()
    assert description in text and "64x64 (6)" in text
    fg = sum(int(l.sum()) for l in labels.values()) / (6 * 64 * 64)
    assert f"class 1 (foreground) pixels / all pixels: {fg:.2%}" in text
    assert (tmp_path / "out" / "summary.txt").read_text().strip() == text


def test_index_masks_keep_classes_and_ignore(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {}

    def write(label, stem, ext):
        idx = rng.choice(np.array([0, 1, 2, 9, 255], np.uint8), label.shape)
        arrays[stem.name] = idx
        assert cv2.imwrite(str(stem) + ext, idx)

    write_folder(tmp_path, write, n=4)
    summary = convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out",
                      ignore_value=9)
    got = converted_labels(tmp_path / "out")
    for name, idx in arrays.items():
        expected = np.where(idx == 9, 255, idx)
        np.testing.assert_array_equal(got[name], expected)
    assert "class indices 0..2, 255 kept as ignore, value 9 kept as ignore" in summary.format()
    config = yaml.safe_load((tmp_path / "out" / "unet_out.yml").read_text())
    assert config["model"]["num_classes"] == 3
    assert config["train_dataset"]["num_classes"] == 3
    assert config["loss"]["types"] == [{"type": "CrossEntropyLoss"}]
    assert config["train_dataset"]["class_names"] == ["class_0", "class_1", "class_2"]
    assert config["val_dataset"]["class_names"] == ["class_0", "class_1", "class_2"]


def test_palette_png_indices_are_the_classes(tmp_path):
    arrays = {}

    def write(label, stem, ext):
        idx = (label + (np.arange(label.size).reshape(label.shape) % 7 == 0) * 2).astype(np.uint8)
        idx = np.minimum(idx, 2)
        im = Image.fromarray(idx, mode="P")
        im.putpalette([10, 10, 10, 200, 0, 0, 0, 0, 200] + [0] * 759)
        im.save(str(stem) + ".png")
        arrays[stem.name] = idx

    write_folder(tmp_path, write, n=3)
    summary = convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    got = converted_labels(tmp_path / "out")
    for name, idx in arrays.items():
        np.testing.assert_array_equal(got[name], idx)
    assert "palette PNG indices 0..2" in summary.format()


@pytest.mark.parametrize("table_ext", [".yml", ".json"])
def test_rgb_masks_with_colour_table(tmp_path, table_ext):
    colours = {0: (0, 0, 0), 1: (200, 30, 40), 2: (20, 180, 60)}
    ignore = (255, 0, 255)
    arrays = {}
    rng = np.random.default_rng(4)

    def write(label, stem, ext):
        idx = rng.choice(np.array([0, 1, 2, 255], np.uint8), label.shape)
        rgb = np.zeros(label.shape + (3,), np.uint8)
        for k, c in colours.items():
            rgb[idx == k] = c
        rgb[idx == 255] = ignore
        assert cv2.imwrite(str(stem) + ".png", rgb[..., ::-1])
        arrays[stem.name] = idx

    write_folder(tmp_path, write, n=3)
    table = {"classes": [{"name": n, "color": list(colours[i])}
                         for i, n in enumerate(["sky", "road", "tree"])],
             "ignore": [list(ignore)]}
    path = tmp_path / f"colors{table_ext}"
    path.write_text(json.dumps(table) if table_ext == ".json" else yaml.safe_dump(table))
    summary = convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out", colors=path,
                      name="scenes")
    got = converted_labels(tmp_path / "out")
    for name, idx in arrays.items():
        np.testing.assert_array_equal(got[name], idx)
    assert "RGB colours (3 classes from the colour table)" in summary.format()
    config = yaml.safe_load((tmp_path / "out" / "unet_scenes.yml").read_text())
    for key in ("train_dataset", "val_dataset"):
        assert config[key]["class_names"] == ["sky", "road", "tree"]
        assert config[key]["palette"] == [list(colours[i]) for i in range(3)]


def test_unknown_colours_are_an_error_listing_the_first_few(tmp_path):
    def write(label, stem, ext):
        rgb = np.zeros(label.shape + (3,), np.uint8)
        for k in range(7):  # 7 unknown colours, k+1 rows each: sorted by pixel count
            rgb[k * 8: k * 8 + k + 1] = (10 * (k + 1), 0, 0)
        assert cv2.imwrite(str(stem) + ".png", rgb[..., ::-1])

    write_folder(tmp_path, write, n=2)
    path = tmp_path / "colors.yml"
    path.write_text("classes:\n  - {name: bg, color: [0, 0, 0]}\n"
                    "  - {name: fg, color: [255, 255, 255]}\n")
    with pytest.raises(ConversionError) as e:
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out", colors=path)
    msg = str(e.value)
    assert msg.startswith("7 mask colour(s) are not in the colour table: [70, 0, 0]")
    assert "[30, 0, 0]" in msg and "[20, 0, 0]" not in msg and "and 2 more" in msg
    assert "img00.png" in msg and not (tmp_path / "out").exists()


def test_colour_mask_without_table_says_pass_colors(tmp_path):
    def write(label, stem, ext):
        rgb = np.dstack([label * 200, label * 10, label * 90]).astype(np.uint8)
        assert cv2.imwrite(str(stem) + ".png", rgb)

    write_folder(tmp_path, write, n=2)
    with pytest.raises(ConversionError, match="is a colour image; pass --colors FILE"):
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")


def test_jpeg_near_binary_masks_are_thresholded_with_a_warning(tmp_path):
    labels = write_folder(tmp_path, grey(255), ext=".jpg", n=3)
    decoded = {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
               for p in (tmp_path / "masks").iterdir()}
    changed = sum(int(((d != 0) & (d != 255)).sum()) for d in decoded.values())
    assert changed > 0  # JPEG did alter the 0/255 values
    summary = convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    got = converted_labels(tmp_path / "out")
    for name, d in decoded.items():
        np.testing.assert_array_equal(got[name], (d >= 128).astype(np.uint8))
        assert (got[name] != labels[name]).mean() < 0.02  # and stays close to the original
    text = summary.format()
    assert f"warning: {changed} pixels ({changed / (3 * 64 * 64):.2%} of all mask pixels) " \
           f"of the 3 JPEG masks were neither 0 nor 255" in text


def test_jpeg_masks_that_are_not_near_binary_are_refused(tmp_path):
    def write(label, stem, ext):
        ramp = np.tile(np.linspace(0, 255, label.shape[1]).astype(np.uint8), (label.shape[0], 1))
        assert cv2.imwrite(str(stem) + ".jpg", ramp)

    write_folder(tmp_path, write, n=2)
    with pytest.raises(ConversionError, match="JPEG is lossy.*save the masks as PNG"):
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")


def test_masks_with_a_single_class_are_refused(tmp_path):
    write_folder(tmp_path, grey(0), n=2)
    with pytest.raises(ConversionError, match="only class 0.*nothing to learn"):
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")


def test_mask_of_another_size_names_both_files(tmp_path):
    write_folder(tmp_path, grey(255), n=2)
    assert cv2.imwrite(str(tmp_path / "masks" / "img01.png"), np.zeros((10, 12), np.uint8))
    with pytest.raises(ConversionError) as e:
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    assert "img01.png is 12x10" in str(e.value) and "img01.jpg is 64x64" in str(e.value)


def test_unreadable_mask_is_named_and_nothing_is_written(tmp_path):
    write_folder(tmp_path, grey(255), n=3)
    (tmp_path / "masks" / "img02.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ConversionError, match="img02.png"):
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []


# ------------------------------------------------------------------------ pairing, splits

def test_pairing_report_and_empty_pairing(tmp_path):
    write_folder(tmp_path, grey(255), n=5)
    (tmp_path / "masks" / "img04.png").rename(tmp_path / "masks" / "orphan.png")
    (tmp_path / "images" / "notes.txt").write_text("x")
    summary = convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    assert sum(summary.counts.values()) == 4
    skipped = " | ".join(summary.skipped)
    assert "1 image(s) without a mask: img04.jpg" in skipped
    assert "1 mask(s) without an image: orphan.png" in skipped
    assert "1 image file(s) that are not images (notes.txt)" in skipped
    empty = tmp_path / "empty"
    write_folder(empty, grey(255), n=2, suffix="_mask")
    with pytest.raises(ConversionError) as e:
        convert(empty / "images", empty / "masks", tmp_path / "out2")
    msg = str(e.value)
    assert msg.startswith(f"no image in {empty / 'images'} has a mask in {empty / 'masks'}")
    assert "pass --mask_suffix _mask" in msg


def test_split_is_deterministic_and_follows_the_fraction(tmp_path):
    write_folder(tmp_path, grey(255), n=10)
    vals = []
    for run, seed in enumerate((7, 7, 8)):
        dst = tmp_path / f"out{run}"
        convert(tmp_path / "images", tmp_path / "masks", dst, val_fraction=0.3, seed=seed)
        split = lists(dst)
        names = {split_name: {Path(i).stem for i, _ in lines}
                 for split_name, lines in split.items()}
        assert len(names["val"]) == 3 and len(names["train"]) == 7
        assert names["val"] | names["train"] == {f"img{i:02d}" for i in range(10)}
        vals.append(names["val"])
    assert vals[0] == vals[1] and vals[0] != vals[2]


def test_val_list_and_existing_split(tmp_path):
    write_folder(tmp_path, grey(255), n=4)
    (tmp_path / "val.txt").write_text("img01.jpg\n# a comment\nimg03\n")
    convert(tmp_path / "images", tmp_path / "masks", tmp_path / "out",
            val_list=tmp_path / "val.txt")
    assert [Path(i).stem for i, _ in lists(tmp_path / "out")["val"]] == ["img01", "img03"]
    (tmp_path / "bad.txt").write_text("img09\n")
    with pytest.raises(ConversionError, match=r"no image/mask pair named img09 \(line 1\)"):
        convert(tmp_path / "images", tmp_path / "masks", tmp_path / "o2",
                val_list=tmp_path / "bad.txt")
    pre = tmp_path / "pre"
    for split, n in (("train", 3), ("val", 2)):
        write_folder(pre / "x" / split, grey(255), n=n)
    for kind in ("images", "masks"):
        for split in ("train", "val"):
            (pre / kind).mkdir(exist_ok=True)
            (pre / "x" / split / kind).rename(pre / kind / split)
    summary = convert(pre / "images", pre / "masks", tmp_path / "o3")
    assert summary.counts == {"train": 3, "val": 2}
    with pytest.raises(ConversionError, match="already split"):
        convert(pre / "images", pre / "masks", tmp_path / "o4", val_fraction=0.5)


def test_crop_size_suits_the_image_size():
    assert crop_size_for(565) == 128  # DRIVE: the reference recipe's crop
    assert crop_size_for(2336) == 512 and crop_size_for(64) == 64 and crop_size_for(40) == 32
    assert default_name("/x/My Cells-2024") == "my_cells_2024"


# ------------------------------------------------------------------------ CLI, training

def test_cli_errors_are_one_line(tmp_path):
    proc = run_tool("tools/convert_dataset.py", "folder", "--images", tmp_path / "nope",
                    "--masks", tmp_path, tmp_path / "out", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: --images {tmp_path / 'nope'} is not a folder")
    proc = run_tool("tools/convert_dataset.py", "--force", "folder", tmp_path, tmp_path / "o",
                    check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "error: the first argument names the dataset (chasedb1, cityscapes, drive, folder, " \
           "hrf, stare); put it first: convert_dataset.py folder" in proc.stderr


def train_and_val(config, tmp_path, iters=20):
    """A few iterations of a width-4 UNet, then tools/val.py; returns the metrics JSON."""
    save = tmp_path / "run"
    run_tool("tools/train.py", "--config", config, "--iters", iters, "--batch_size", 2,
             "--save_dir", save, "--save_interval", iters, "--log_iters", iters, *TINY)
    out = tmp_path / "metrics.json"
    run_tool("tools/val.py", "--config", config, "--model_path",
             save / f"iter_{iters}" / "model.pdparams", "--save_json", out, *TINY)
    return json.loads(out.read_text())


def test_zero_255_folder_stops_then_its_conversion_trains(tmp_path):
    """The issue's user: a 0/255 folder trained directly stops (train and val) with the
    converter command; the converted folder trains and scores the foreground."""
    write_folder(tmp_path, grey(255), n=6, suffix="_mask")
    lines = [f"images/img{i:02d}.jpg masks/img{i:02d}_mask.png" for i in range(6)]
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
    dst = tmp_path / "converted"
    proc = run_tool("tools/convert_dataset.py", "folder", "--images", tmp_path / "images",
                    "--masks", tmp_path / "masks", "--mask_suffix", "_mask", dst,
                    "--val_fraction", 0.34, "--seed", 1)
    config = dst / "unet_converted.yml"
    assert f"tools/train.py --config {config}" in proc.stdout
    raw = yaml.safe_load(config.read_text())
    for key, path in (("train_dataset", "train_path"), ("val_dataset", "val_path")):
        raw[key]["dataset_root"] = str(tmp_path)
        raw[key][path] = "all.txt"
    raw_config = tmp_path / "raw.yml"
    raw_config.write_text(yaml.safe_dump(raw))
    for tool in ("train.py", "val.py"):
        bad = run_tool(f"tools/{tool}", "--config", raw_config, "--save_dir", tmp_path / "x",
                       check=False) if tool == "train.py" else \
            run_tool(f"tools/{tool}", "--config", raw_config, check=False)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert "holds only 0 and 255" in bad.stderr and "255 is the ignore value" in bad.stderr
        assert "tools/convert_dataset.py folder --images" in bad.stderr
    assert raw["train_dataset"]["transforms"][1]["crop_size"] == [64, 64]
    metrics = train_and_val(config, tmp_path)
    assert metrics["num_images"] == 2
    assert metrics["dice_fg"] > 0 and np.isfinite(metrics["auc_roc"])


# ------------------------------------------------------------------------ real DRIVE

@pytest.fixture(scope="module")
def drive_folder(tmp_path_factory):
    """Real DRIVE as a user would bring it: flat JPEG images, 0/255 PNG masks and RGB
    colour masks; returns (root, {name: 0/1 original annotation})."""
    if not DRIVE_SRC.is_dir():
        pytest.skip(f"real DRIVE data not found at {DRIVE_SRC}")
    root = tmp_path_factory.mktemp("drive_user")
    for sub in ("images", "masks", "colour_masks"):
        (root / sub).mkdir()
    truth = {}
    for folder, numbers, tag in (("training", range(21, 41), "training"),
                                 ("test", range(1, 21), "test")):
        for nn in numbers:
            name = f"{nn:02d}_{tag}"
            rgb = np.asarray(Image.open(DRIVE_SRC / folder / "images" / f"{name}.tif")
                             .convert("RGB"))
            Image.fromarray(rgb).save(root / "images" / f"{name}.jpg", quality=90)
            label = (np.asarray(Image.open(DRIVE_SRC / folder / "1st_manual" /
                                           f"{nn:02d}_manual1.gif").convert("L")) > 127)
            truth[name] = label.astype(np.uint8)
            Image.fromarray(label.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
            colour = np.where(label[..., None], [200, 30, 40], [10, 20, 30]).astype(np.uint8)
            Image.fromarray(colour).save(root / "colour_masks" / f"{name}.png")
    (root / "colors.yml").write_text("classes:\n  - {name: background, color: [10, 20, 30]}\n"
                                     "  - {name: vessel, color: [200, 30, 40]}\n")
    return root, truth


def test_real_drive_binary_masks_convert_exactly_and_train(drive_folder, tmp_path):
    root, truth = drive_folder
    dst = tmp_path / "drive"
    run_tool("tools/convert_dataset.py", "folder", "--images", root / "images", "--masks",
             root / "masks", dst, "--val_fraction", 0.1, "--seed", 0)
    got = converted_labels(dst)
    assert sorted(got) == sorted(truth)
    for name, label in truth.items():
        np.testing.assert_array_equal(got[name], label, err_msg=name)
    assert len(lists(dst)["val"]) == 4
    config = yaml.safe_load((dst / "unet_drive.yml").read_text())
    assert config["train_dataset"]["transforms"][1]["crop_size"] == [128, 128]
    metrics = train_and_val(dst / "unet_drive.yml", tmp_path)
    assert metrics["num_images"] == 4 and metrics["num_pixels"] == 4 * 565 * 584
    assert metrics["dice_fg"] > 0 and np.isfinite(metrics["auc_roc"])


def test_real_drive_colour_masks_convert_exactly(drive_folder, tmp_path):
    root, truth = drive_folder
    summary = convert(root / "images", root / "colour_masks", tmp_path / "c",
                      colors=root / "colors.yml")
    got = converted_labels(tmp_path / "c")
    for name, label in truth.items():
        np.testing.assert_array_equal(got[name], label, err_msg=name)
    vessel = sum(int(l.sum()) for l in truth.values()) / (40 * 565 * 584)
    assert f"class 1 (vessel) pixels / all pixels: {vessel:.2%}" in summary.format()


def test_blurred_or_grey_level_masks_are_refused_and_mixed_jpeg_thresholded(tmp_path):
    def blurred(label, stem, ext):
        edge = cv2.GaussianBlur(label.astype(np.float32) * 255, (3, 3), 0.6)
        assert cv2.imwrite(str(stem) + ".png", edge.round().astype(np.uint8))

    write_folder(tmp_path / "a", blurred, n=2, w=256, h=256)
    with pytest.raises(ConversionError, match="blurred edges: [0-9]+ pixels"):
        convert(tmp_path / "a" / "images", tmp_path / "a" / "masks", tmp_path / "out")

    def ramp(label, stem, ext):
        values = np.arange(label.size).reshape(label.shape) % 256
        assert cv2.imwrite(str(stem) + ".png", values.astype(np.uint8))

    write_folder(tmp_path / "b", ramp, n=2)
    with pytest.raises(ConversionError, match="256 distinct values: they look like grey-level"):
        convert(tmp_path / "b" / "images", tmp_path / "b" / "masks", tmp_path / "out")

    labels = write_folder(tmp_path / "c", grey(255), n=2)
    masks = tmp_path / "c" / "masks"
    cv2.imwrite(str(masks / "img01.jpg"), cv2.imread(str(masks / "img01.png")))
    (masks / "img01.png").unlink()
    summary = convert(tmp_path / "c" / "images", masks, tmp_path / "out")
    assert "of the 1 JPEG masks were neither 0 nor 255" in summary.format()
    np.testing.assert_array_equal(converted_labels(tmp_path / "out")["img00"], labels["img00"])
