"""Generic list-file Dataset, retina and Cityscapes datasets, image reading, download offer."""
import functools
import http.server
import os
import shutil
import threading
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from paddleseg_unet.cvlibs.registry import DATASETS
from paddleseg_unet.datasets import (CHASEDB1, DRIVE, HRF, STARE, Cityscapes, Dataset,
                                     DatasetError, DatasetNotFoundError, dataset_meta,
                                     read_label)
from paddleseg_unet.transforms import Compose
from paddleseg_unet.utils import visualize


def write_rgb(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def write_grey(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_pairs(root, n=3, h=12, w=10, k=2, seed=0):
    """n random RGB images with labels in 0..k-1 under root; returns the arrays."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, k, (h, w), dtype=np.uint8)
        write_rgb(os.path.join(root, "img", f"{i}.png"), img)
        write_grey(os.path.join(root, "lab", f"{i}.png"), label)
        pairs.append((img, label))
    return pairs


def write_list(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def generic(root, lines, mode="train", transforms=None, **kw):
    write_list(os.path.join(root, "list.txt"), lines)
    key = {"train": "train_path", "val": "val_path", "test": "test_path"}[mode]
    return Dataset(dataset_root=str(root), transforms=transforms or Compose([]),
                   num_classes=kw.pop("num_classes", 2), mode=mode,
                   **{key: os.path.join(root, "list.txt")}, **kw)


LINES3 = [f"img/{i}.png lab/{i}.png" for i in range(3)]


def test_generic_dataset_reads_list(tmp_path):
    pairs = make_pairs(tmp_path)
    ds = generic(tmp_path, LINES3 + [""])  # a blank line is skipped
    assert len(ds) == 3 and "Dataset" in DATASETS
    for i, (img, label) in enumerate(pairs):
        s = ds[i]
        assert s["img"].dtype == np.float32 and s["img"].shape == (3, 12, 10)
        np.testing.assert_array_equal(s["img"], img.transpose(2, 0, 1).astype(np.float32))
        assert s["label"].dtype == np.int64
        np.testing.assert_array_equal(s["label"], label)
        assert s["name"] == str(i) and s["img_path"].endswith(f"{i}.png")


def test_separator_and_path_relative_to_root(tmp_path):
    make_pairs(tmp_path)
    write_list(tmp_path / "l.txt", [f"img/{i}.png,lab/{i}.png" for i in range(3)])
    ds = Dataset(str(tmp_path), Compose([]), 2, train_path="l.txt", separator=",")
    assert len(ds) == 3


def test_val_keeps_original_label_size(tmp_path):
    pairs = make_pairs(tmp_path)
    ds = generic(tmp_path, LINES3, mode="val",
                 transforms=[{"type": "Resize", "target_size": [6, 4]}])
    s = ds[1]
    assert s["img"].shape == (3, 4, 6)
    np.testing.assert_array_equal(s["label"], pairs[1][1])
    assert [tuple(t) for t in s["trans_info"]][0][1] == (12, 10)


def test_test_mode_accepts_image_only_lines(tmp_path):
    make_pairs(tmp_path)
    ds = generic(tmp_path, ["img/0.png", "img/1.png lab/1.png"], mode="test")
    assert "label" not in ds[0] and ds[1]["label"].shape == (12, 10)


def test_transform_rng_comes_from_seed_and_draw(tmp_path):
    make_pairs(tmp_path)
    seen = []

    def spy(sample, rng):
        seen.append(rng.random())
        return sample

    ds = generic(tmp_path, LINES3, transforms=Compose([spy]))
    ds[(2, 5, 7)]
    ds[1]
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, 7]))).random()
    plain = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0, 1]))).random()
    assert seen == [expected, plain]


def test_edge_target(tmp_path):
    label = np.zeros((8, 16), np.uint8)
    label[:, 8:] = 1
    write_rgb(tmp_path / "img" / "0.png", np.zeros((8, 16, 3), np.uint8))
    write_grey(tmp_path / "lab" / "0.png", label)
    s = generic(tmp_path, ["img/0.png lab/0.png"], edge=True)[0]
    # pixels within 2 of the boundary between columns 7 and 8
    expected = np.zeros((8, 16), np.uint8)
    expected[:, 6:10] = 1
    np.testing.assert_array_equal(s["edge"], expected)


# -- bad input -------------------------------------------------------------------------
def test_missing_list_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nolist.txt"):
        Dataset(str(tmp_path), Compose([]), 2, train_path=str(tmp_path / "nolist.txt"))


def test_wrong_field_count(tmp_path):
    make_pairs(tmp_path)
    with pytest.raises(DatasetError) as e:
        generic(tmp_path, ["img/0.png lab/0.png", "img/1.png lab/1.png extra"])
    assert "list.txt line 2" in str(e.value) and "3 field" in str(e.value)


def test_missing_image_named_with_line(tmp_path):
    make_pairs(tmp_path)
    with pytest.raises(DatasetError) as e:
        generic(tmp_path, ["img/0.png lab/0.png", "", "img/9.png lab/1.png"])
    assert "list.txt line 3" in str(e.value) and "9.png" in str(e.value)


def test_unreadable_image(tmp_path):
    make_pairs(tmp_path)
    (tmp_path / "img" / "1.png").write_bytes(b"not an image at all")
    ds = generic(tmp_path, LINES3)
    with pytest.raises(DatasetError) as e:
        ds[1]
    msg = str(e.value)
    assert "list.txt line 2" in msg and os.path.join("img", "1.png") in msg
    assert "decoded" in msg


def test_size_mismatch(tmp_path):
    make_pairs(tmp_path)
    write_grey(tmp_path / "lab" / "0.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError) as e:
        generic(tmp_path, LINES3)[0]
    msg = str(e.value)
    assert "line 1" in msg and "5x5" in msg and "10x12" in msg and "differ in size" in msg


def test_label_values_out_of_range(tmp_path):
    make_pairs(tmp_path)
    bad = np.zeros((12, 10), np.uint8)
    bad[0, 0], bad[1, 1], bad[2, 2] = 7, 255, 1  # 255 is the ignore value: allowed
    write_grey(tmp_path / "lab" / "2.png", bad)
    with pytest.raises(DatasetError) as e:  # the build-time sample reads every label here
        generic(tmp_path, LINES3)
    msg = str(e.value)
    assert "line 3" in msg and "2.png" in msg and "7" in msg and "0..1" in msg
    generic(tmp_path, LINES3, num_classes=8)[2]  # fine with 8 classes
    # Each read is checked too: a label that turns bad after the build.
    ds = generic(tmp_path, LINES3, num_classes=8)
    bad[3, 3] = 9
    write_grey(tmp_path / "lab" / "2.png", bad)
    with pytest.raises(DatasetError, match=r"line 3: .*values 9 outside 0\.\.7"):
        ds[2]


def test_bad_mode(tmp_path):
    make_pairs(tmp_path)
    write_list(tmp_path / "list.txt", LINES3)
    with pytest.raises(DatasetError, match="mode"):
        Dataset(str(tmp_path), Compose([]), 2, mode="training", train_path="list.txt")


# -- label reading -----------------------------------------------------------------------
def test_palette_png_reads_indices(tmp_path):
    idx = (np.arange(30).reshape(5, 6) % 3).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label(str(tmp_path / "p.png")), idx)


def test_one_bit_png_reads_zero_one(tmp_path):
    mask = (np.arange(30).reshape(5, 6) % 2).astype(bool)
    Image.fromarray(mask).save(tmp_path / "b.png")  # 1-bit greyscale PNG
    assert cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED).max() == 255
    np.testing.assert_array_equal(read_label(str(tmp_path / "b.png")), mask.astype(np.uint8))


def test_grey_stored_as_rgb_and_colour_label(tmp_path):
    grey = (np.arange(30).reshape(5, 6) % 2).astype(np.uint8)
    write_grey(tmp_path / "g.png", np.dstack([grey] * 3))
    np.testing.assert_array_equal(read_label(str(tmp_path / "g.png")), grey)
    colour = np.dstack([grey, grey, 1 - grey])
    write_grey(tmp_path / "c.png", colour)
    with pytest.raises(DatasetError, match="colour"):
        read_label(str(tmp_path / "c.png"))


def test_sixteen_bit_label(tmp_path):
    lab = np.array([[0, 1], [300, 2]], np.uint16)
    write_grey(tmp_path / "l16.png", lab)
    np.testing.assert_array_equal(read_label(str(tmp_path / "l16.png")), lab)


# -- retina ------------------------------------------------------------------------------
def make_converted(root, n_train=2, n_val=1, h=20, w=18, fov=True):
    """The converters' layout: images/annotations/fov/{train,val} + lists."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            name = f"{split}{i}.png"
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            label = rng.integers(0, 2, (h, w), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            mask[2:-2, 2:-2] = 1
            write_rgb(os.path.join(root, "images", split, name), img)
            write_grey(os.path.join(root, "annotations", split, name), label)
            if fov:
                write_grey(os.path.join(root, "fov", split, name), mask)
            lines.append(f"images/{split}/{name} annotations/{split}/{name}")
            arrays[name] = (img, label, mask)
        write_list(os.path.join(root, f"{split}_list.txt"), lines)
    return arrays


@pytest.mark.parametrize("cls", [DRIVE, STARE, CHASEDB1, HRF])
def test_retina_converted_layout(tmp_path, cls):
    arrays = make_converted(tmp_path)
    train = cls(dataset_root=str(tmp_path), transforms=[{"type": "Normalize"}])
    val = cls(dataset_root=str(tmp_path), transforms=[{"type": "Resize", "target_size": 8}],
              mode="val")
    assert cls.NUM_CLASSES == 2 and len(train) == 2 and len(val) == 1
    t = train[0]
    np.testing.assert_allclose(t["img"], (arrays["train0.png"][0].transpose(2, 0, 1) / 255.0
                                          - 0.5) / 0.5, atol=1e-6)
    assert "fov" not in t
    v = val[0]
    assert v["img"].shape == (3, 8, 8)
    np.testing.assert_array_equal(v["label"], arrays["val0.png"][1])
    np.testing.assert_array_equal(v["fov"], arrays["val0.png"][2])
    assert cls(dataset_root=str(tmp_path), mode="test")[0]["fov"].shape == (20, 18)


def test_retina_paddleseg_prepared_layout(tmp_path):
    rng = np.random.default_rng(2)
    for split, names in (("training", ["21", "22"]), ("test", ["01"])):
        for n in names:
            write_rgb(tmp_path / "images" / split / f"{n}.png",
                      rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
            write_grey(tmp_path / "annotations" / split / f"{n}.png",
                       rng.integers(0, 2, (9, 7), dtype=np.uint8))
    write_list(tmp_path / "train_list.txt",
               ["images/training/21.png annotations/training/21.png",
                "images/training/22.png annotations/training/22.png"])
    write_list(tmp_path / "val_list.txt", ["images/test/01.png annotations/test/01.png"])
    ds = DRIVE(dataset_root=str(tmp_path), mode="val")
    assert len(ds) == 1 and "fov" not in ds[0] and ds[0]["label"].shape == (9, 7)


def test_retina_missing_root_message(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        DRIVE(dataset_root=str(tmp_path / "data" / "DRIVE"))
    msg = str(e.value)
    assert "download=True" in msg and "python tools/convert_dataset.py drive" in msg
    assert str(tmp_path / "data" / "DRIVE") in msg


def test_retina_download_from_local_server(tmp_path, monkeypatch):
    # PaddleSeg's zips hold one top folder with the lists inside.
    src = tmp_path / "src" / "DRIVE"
    make_converted(src, fov=False)
    archive = tmp_path / "serve" / "drive.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for folder, _, files in os.walk(src):
            for f in files:
                full = os.path.join(folder, f)
                zf.write(full, os.path.relpath(full, src.parent))
    handler = functools.partial(QuietHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("PADDLESEG_UNET_HOME", str(tmp_path / "home"))
        monkeypatch.setattr(DRIVE, "URL",
                            f"http://127.0.0.1:{server.server_address[1]}/drive.zip")
        root = tmp_path / "data" / "DRIVE"
        ds = DRIVE(dataset_root=str(root), download=True)
        assert len(ds) == 2 and (root / "val_list.txt").is_file()
        assert (tmp_path / "home" / "datasets" / "drive.zip").is_file()
        assert sorted(os.listdir(tmp_path / "data")) == ["DRIVE"]  # no staging left over
        shutil.rmtree(root)
        server.shutdown()  # the second install comes from the cached zip
        assert len(DRIVE(dataset_root=str(root), mode="val", download=True)) == 1
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# -- cityscapes --------------------------------------------------------------------------
def make_cityscapes(root, labels=True, train_ids=True):
    rng = np.random.default_rng(3)
    for split, city, stems in (("train", "aachen", ["aachen_000000_000019",
                                                    "aachen_000001_000019"]),
                               ("val", "frankfurt", ["frankfurt_000000_000294"])):
        for stem in stems:
            write_rgb(os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"),
                      rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
            if labels:
                lab = rng.choice(np.array(list(range(19)) + [255], np.uint8), (8, 16))
                kind = "labelTrainIds" if train_ids else "labelIds"
                write_grey(os.path.join(root, "gtFine", split, city,
                                        f"{stem}_gtFine_{kind}.png"), lab)


def test_cityscapes(tmp_path):
    make_cityscapes(tmp_path)
    train = Cityscapes(dataset_root=str(tmp_path), transforms=[{"type": "Normalize"}])
    val = Cityscapes(dataset_root=str(tmp_path), mode="val")
    assert Cityscapes.NUM_CLASSES == 19 and len(train) == 2 and len(val) == 1
    s = train[1]
    assert s["img"].shape == (3, 8, 16) and s["name"] == "aachen_000001_000019"
    expected = read_label(str(tmp_path / "gtFine" / "train" / "aachen" /
                               "aachen_000001_000019_gtFine_labelTrainIds.png"))
    np.testing.assert_array_equal(s["label"], expected)


def test_cityscapes_without_train_ids_says_convert(tmp_path):
    make_cityscapes(tmp_path, train_ids=False)
    with pytest.raises(DatasetError) as e:
        Cityscapes(dataset_root=str(tmp_path))
    assert "labelTrainIds" in str(e.value) and "convert_dataset.py cityscapes" in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="leftImg8bit"):
        Cityscapes(dataset_root=str(tmp_path / "nowhere"))


def test_decoded_image_cache_returns_what_disk_reads_give(tmp_path):
    """Retina sets cache decoded images by default; samples equal uncached ones, the cache
    survives a transform that would write into its input, and files are read once."""
    arrays = make_converted(tmp_path, n_train=2, n_val=1)
    spec = [{"type": "RandomHorizontalFlip", "prob": 1.0}, {"type": "Normalize"}]
    cached = DRIVE(dataset_root=str(tmp_path), transforms=spec)
    plain = DRIVE(dataset_root=str(tmp_path), transforms=spec, cache_images=False)
    assert cached.cache_images and not plain.cache_images
    reads = []
    import paddleseg_unet.datasets.dataset as dataset_module
    original = dataset_module.read_image
    dataset_module.read_image = lambda path: reads.append(path) or original(path)
    try:
        for draw in range(6):
            a, b = cached[(draw % 2, 0, draw)], plain[(draw % 2, 0, draw)]
            np.testing.assert_array_equal(a["img"], b["img"])
            np.testing.assert_array_equal(a["label"], b["label"])
            a["label"][:] = 7  # a consumer scribbling on its sample must not reach the cache
    finally:
        dataset_module.read_image = original
    assert reads.count(plain.records[0].img_path) == 3 + 1  # 3 uncached reads + 1 cached
    np.testing.assert_array_equal(cached[(0, 0, 0)]["label"], arrays["train0.png"][1][:, ::-1])
    val = DRIVE(dataset_root=str(tmp_path), transforms=[{"type": "Normalize"}], mode="val")
    np.testing.assert_array_equal(val[0]["fov"], arrays["val0.png"][2])


VOC_FIRST_3 = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]  # PASCAL VOC devkit colours


def test_dataset_metadata_gives_colour_maps_and_names():
    city = dataset_meta({"type": "Cityscapes"}, 19)
    colors = visualize.get_color_map(19, city.palette)
    assert tuple(colors[0]) == (128, 64, 128)  # road
    assert tuple(colors[10]) == (70, 130, 180)  # sky
    assert tuple(colors[13]) == (0, 0, 142)  # car
    assert len({tuple(c) for c in colors}) == 19
    assert city.class_names[11] == "person" and city.foreground_class is None
    drive = dataset_meta({"type": "DRIVE"}, 2)
    assert visualize.get_color_map(2, drive.palette).tolist() == [[0, 0, 0], [0, 255, 0]]
    hrf = dataset_meta({"type": "HRF"}, 2)
    assert hrf.class_names == ("background", "vessel")
    assert (hrf.foreground_class, hrf.valid_region) == (1, "fov")
    generic = dataset_meta({"type": "Dataset"}, 3)
    assert [list(c) for c in generic.palette] == [list(c) for c in VOC_FIRST_3]
    assert generic.class_names == ("class_0", "class_1", "class_2")
    named = dataset_meta({"type": "Dataset", "class_names": ["bg", "cell"],
                          "palette": [[1, 2, 3]]}, 3)
    assert named.class_names == ("bg", "cell", "class_2")
    assert named.palette[0] == (1, 2, 3) and list(named.palette[2]) == list(VOC_FIRST_3[2])
    assert visualize.get_color_map(3).tolist() == [list(c) for c in VOC_FIRST_3]
    with pytest.raises(visualize.VisualizeError):
        visualize.get_color_map(0)
    with pytest.raises(DatasetError, match="class_names has 3 entries for 2 classes"):
        dataset_meta({"type": "Dataset", "class_names": ["a", "b", "c"]}, 2)
