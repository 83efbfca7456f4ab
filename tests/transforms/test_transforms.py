"""Transforms against independent numpy/cv2/Pillow computations and sampling statistics."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from paddleseg_unet.cvlibs.registry import TRANSFORMS, RegistryError, build
from paddleseg_unet.transforms import (Compose, Normalize, Padding, RandomDistort,
                                       RandomHorizontalFlip, RandomPaddingCrop, RandomRotation,
                                       RandomVerticalFlip, Resize, ResizeByLong, ResizeByShort,
                                       ResizeStepScaling)
from paddleseg_unet.transforms import functional as F

SHARED_DATA = os.environ.get(
    "PADDLESEG_UNET_SHARED_DATA",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"))

# Chi-square critical values at p = 0.001 (so a correct sampler fails 1 run in 1000 seeds;
# the seeds are fixed, so the tests are deterministic).
CHI2_999 = {2: 13.82, 4: 18.47, 6: 22.46}


def chi_square(counts):
    counts = np.asarray(counts, np.float64)
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def sample(h=12, w=10, seed=0, labels=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    return {
        "img": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "label": rng.choice(np.array(labels, np.uint8), size=(h, w)),
        "fov": (rng.random((h, w)) > 0.3).astype(np.uint8),
        "trans_info": [],
        "img_path": "mem.png",
    }


def coord_image(h, w):
    """Channel 0 = row, channel 1 = column, channel 2 = 7: any window reveals its offset."""
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=2).astype(np.uint8)


def numpy_hue(img):
    """Hexcone hue on a 0..256 full-turn scale, float, written out independently of cv2."""
    x = img.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = x.max(axis=2), x.min(axis=2)
    d = np.where(mx - mn == 0, 1, mx - mn)
    h = np.where(mx == r, (g - b) / d, np.where(mx == g, 2 + (b - r) / d, 4 + (r - g) / d))
    return (h / 6.0 * 256.0) % 256.0


# ----------------------------------------------------------------------------- registry / errors
def test_all_registered_and_buildable_from_paddleseg_yaml_specs():
    specs = [
        {"type": "ResizeStepScaling", "min_scale_factor": 0.5, "max_scale_factor": 2.0,
         "scale_step_size": 0.25},
        {"type": "RandomPaddingCrop", "crop_size": [128, 128]},
        {"type": "RandomHorizontalFlip"},
        {"type": "RandomVerticalFlip"},
        {"type": "RandomDistort", "brightness_range": 0.4, "contrast_range": 0.4,
         "saturation_range": 0.4},
        {"type": "Normalize"},
        {"type": "ResizeByLong", "long_size": 1280},
        {"type": "ResizeByShort", "short_size": 64},
        {"type": "Resize", "target_size": [64, 32], "keep_ratio": True},
        {"type": "Padding", "target_size": [64, 64]},
        {"type": "RandomRotation", "max_rotation": 10},
    ]
    for spec in specs:
        assert spec["type"] in TRANSFORMS
        assert type(build(spec, TRANSFORMS)).__name__ == spec["type"]
    compose = Compose(specs[:6])
    assert [type(t).__name__ for t in compose.transforms] == [s["type"] for s in specs[:6]]
    with pytest.raises(RegistryError, match="crop_sise"):
        Compose([{"type": "RandomPaddingCrop", "crop_sise": [1, 1]}])


@pytest.mark.parametrize("make, match", [
    (lambda: RandomPaddingCrop(crop_size=(-1, 5)), "RandomPaddingCrop: crop_size"),
    (lambda: RandomPaddingCrop(crop_size=(3, 4, 5)), "RandomPaddingCrop: crop_size"),
    (lambda: RandomPaddingCrop(im_padding_value="grey"), "RandomPaddingCrop: im_padding_value"),
    (lambda: ResizeStepScaling(2.0, 1.0), "ResizeStepScaling: min_scale_factor"),
    (lambda: ResizeStepScaling(0.5, 1.0, -0.1), "ResizeStepScaling: scale_step_size"),
    (lambda: ResizeStepScaling(0, 1.0), "ResizeStepScaling: min_scale_factor"),
    (lambda: RandomHorizontalFlip(prob=1.5), "RandomHorizontalFlip: prob"),
    (lambda: RandomVerticalFlip(prob=-0.1), "RandomVerticalFlip: prob"),
    (lambda: RandomDistort(brightness_prob=2), "RandomDistort: brightness_prob"),
    (lambda: RandomDistort(contrast_range=-0.1), "RandomDistort: contrast_range"),
    (lambda: Normalize(std=(0.5, 0, 0.5)), "Normalize: std"),
    (lambda: Normalize(mean=(0.5, 0.5)), "Normalize: mean"),
    (lambda: Resize(interp="BICUBIC"), "Resize: interp"),
    (lambda: Resize(target_size=(0, 10)), "Resize: target_size"),
    (lambda: ResizeByLong(long_size=-3), "ResizeByLong: long_size"),
    (lambda: ResizeByShort(short_size=2.5), "ResizeByShort: short_size"),
    (lambda: Padding(target_size=(10, -1)), "Padding: target_size"),
    (lambda: RandomRotation(max_rotation=-5), "RandomRotation: max_rotation"),
    (lambda: RandomRotation(label_padding_value=2.5), "RandomRotation: label_padding_value"),
    (lambda: Compose("Normalize"), "Compose: transforms"),
])
def test_bad_arguments_raise_value_error_naming_transform_and_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_random_transform_without_rng_is_a_clear_error():
    with pytest.raises(TypeError, match="RandomHorizontalFlip is random"):
        RandomHorizontalFlip()(sample())
    # Deterministic transforms need no rng.
    assert ResizeByLong(6)(sample())["img"].shape[:2] == (6, 5)


def test_bad_sample_errors_name_the_file():
    with pytest.raises(ValueError, match="mem.png"):
        Compose([Normalize()])({"img": np.zeros((4, 4), np.uint8), "img_path": "mem.png"})
    bad = sample()
    bad["label"] = bad["label"][:-1]
    with pytest.raises(ValueError, match="'label'.*mem.png"):
        Compose([Normalize()])(bad)
    with pytest.raises(ValueError, match="Padding: image mem.png is 10x12"):
        Padding((8, 8))(sample())


# ----------------------------------------------------------------------------- ResizeStepScaling
def test_resize_step_scaling_draws_only_the_allowed_scales_uniformly():
    t = ResizeStepScaling(0.5, 2.0, 0.25)
    allowed = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    np.testing.assert_allclose(t.scales(), allowed)
    rng = np.random.default_rng(123)
    draws = np.array([t.draw_scale(rng) for _ in range(7000)])
    counts = [int(np.isclose(draws, s).sum()) for s in allowed]
    assert sum(counts) == len(draws)  # nothing outside the set
    assert min(counts) > 0
    assert chi_square(counts) < CHI2_999[6]
    # Through __call__: every output size is round(s * side) for an allowed s, all reached.
    s = sample(h=40, w=20)
    seen = set()
    rng = np.random.default_rng(7)
    for _ in range(200):
        out = t(s, rng)
        h, w = out["img"].shape[:2]
        matches = [a for a in allowed if (h, w) == (round(40 * a), round(20 * a))]
        assert matches, (h, w)
        seen.add(matches[0])
        assert out["trans_info"] == [("resize", (40, 20))]
    assert seen == set(allowed)


def test_resize_step_scaling_edge_cases():
    assert len(ResizeStepScaling(0.5, 1.0, 0.1).scales()) == 6  # 4.999... steps is 5
    assert ResizeStepScaling(1.5, 1.5).draw_scale(np.random.default_rng(0)) == 1.5
    rng = np.random.default_rng(3)
    cont = np.array([ResizeStepScaling(0.8, 1.2, 0).draw_scale(rng) for _ in range(500)])
    assert cont.min() >= 0.8 and cont.max() <= 1.2 and len(np.unique(cont)) == 500


def test_resize_step_scaling_matches_cv2_and_label_is_nearest():
    s = sample(h=23, w=17, labels=(0, 3, 9, 255))
    rng = np.random.default_rng(5)
    for _ in range(10):
        out = ResizeStepScaling(0.5, 2.0, 0.25)(s, rng)
        h, w = out["img"].shape[:2]
        np.testing.assert_array_equal(out["img"], cv2.resize(s["img"], (w, h)))
        np.testing.assert_array_equal(
            out["label"], cv2.resize(s["label"], (w, h), interpolation=cv2.INTER_NEAREST))
        assert set(np.unique(out["label"])) <= {0, 3, 9, 255}
        assert set(np.unique(out["fov"])) <= {0, 1}


def test_nearest_window_equals_cv2_nearest_resize():
    rng = np.random.default_rng(11)
    for _ in range(40):
        h, w = rng.integers(3, 60, 2)
        th, tw = rng.integers(1, 130, 2)
        a = rng.integers(0, 256, (h, w)).astype(np.int64)
        ref = cv2.resize(a.astype(np.int32), (int(tw), int(th)),
                         interpolation=cv2.INTER_NEAREST)
        top, left = rng.integers(0, th), rng.integers(0, tw)
        got = F.resize_nearest_window(a, (th, tw), top, left, th - top, tw - left)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref[top:, left:])


# ----------------------------------------------------------------------------- RandomPaddingCrop
def test_random_padding_crop_pads_bottom_right_when_smaller():
    s = sample(h=5, w=7)
    out = RandomPaddingCrop(crop_size=(10, 8))(s, np.random.default_rng(0))  # (w, h)
    img, label, fov = out["img"], out["label"], out["fov"]
    assert img.shape == (8, 10, 3) and label.shape == (8, 10) and fov.shape == (8, 10)
    assert img.dtype == np.float32  # 127.5 is kept exactly
    np.testing.assert_array_equal(img[:5, :7], s["img"])
    assert np.all(img[5:] == 127.5) and np.all(img[:, 7:] == 127.5)
    np.testing.assert_array_equal(label[:5, :7], s["label"])
    assert np.all(label[5:] == 255) and np.all(label[:, 7:] == 255)
    np.testing.assert_array_equal(fov[:5, :7], s["fov"])
    assert np.all(fov[5:] == 0) and np.all(fov[:, 7:] == 0)
    assert out["trans_info"] == []
    # An integer padding value keeps uint8.
    out = RandomPaddingCrop((10, 8), im_padding_value=0)(s, np.random.default_rng(0))
    assert out["img"].dtype == np.uint8 and np.all(out["img"][5:] == 0)


def test_random_padding_crop_window_is_a_slice_with_uniform_offsets():
    h, w, crop_h, crop_w = 12, 10, 8, 8
    s = sample(h=h, w=w)
    s["img"] = coord_image(h, w)
    t = RandomPaddingCrop(crop_size=(crop_w, crop_h))
    rng = np.random.default_rng(2024)
    tops, lefts = [], []
    for _ in range(3000):
        out = t(s, rng)
        top, left = int(out["img"][0, 0, 0]), int(out["img"][0, 0, 1])
        np.testing.assert_array_equal(out["img"], s["img"][top:top + 8, left:left + 8])
        np.testing.assert_array_equal(out["label"], s["label"][top:top + 8, left:left + 8])
        np.testing.assert_array_equal(out["fov"], s["fov"][top:top + 8, left:left + 8])
        tops.append(top)
        lefts.append(left)
    top_counts = np.bincount(tops, minlength=h - crop_h + 1)
    left_counts = np.bincount(lefts, minlength=w - crop_w + 1)
    assert len(top_counts) == 5 and len(left_counts) == 3 and top_counts.min() > 0
    assert chi_square(top_counts) < CHI2_999[4]
    assert chi_square(left_counts) < CHI2_999[2]


def test_random_padding_crop_mixed_case_pads_one_side_only():
    s = sample(h=6, w=20)
    s["img"] = coord_image(6, 20)
    out = RandomPaddingCrop(crop_size=(8, 9))(s, np.random.default_rng(1))
    left = int(out["img"][0, 0, 1])
    np.testing.assert_array_equal(out["img"][:6], s["img"][:, left:left + 8])
    assert np.all(out["img"][6:] == 127.5) and np.all(out["label"][6:] == 255)


# ----------------------------------------------------------------------------- flips
@pytest.mark.parametrize("cls, prob, axis", [
    (RandomHorizontalFlip, 0.5, 1), (RandomVerticalFlip, 0.1, 0)])
def test_flip_probability_and_equality_with_np_flip(cls, prob, axis):
    t = cls()
    assert t.prob == prob  # PaddleSeg's defaults
    s = sample(h=5, w=6)
    rng = np.random.default_rng(99)
    n, flipped = 4000, 0
    for _ in range(n):
        out = t(s, rng)
        if np.array_equal(out["img"], s["img"]):
            for key in ("label", "fov"):
                np.testing.assert_array_equal(out[key], s[key])
        else:
            flipped += 1
            for key in ("img", "label", "fov"):
                np.testing.assert_array_equal(out[key], np.flip(s[key], axis=axis))
    sigma = np.sqrt(n * prob * (1 - prob))
    assert abs(flipped - n * prob) < 4 * sigma


# ----------------------------------------------------------------------------- Normalize
def test_normalize_matches_formula():
    img = sample()["img"]
    for mean, std in [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                      ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]:
        out = Normalize(mean, std)({"img": img})["img"]
        ref = (img.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
        assert out.dtype == np.float32 and out.shape == img.shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    out = Normalize()({"img": img.astype(np.float32)})["img"]
    np.testing.assert_allclose(out, img / 127.5 - 1.0, atol=1e-6)
    assert out.min() >= -1 and out.max() <= 1


# ----------------------------------------------------------------------------- colour primitives
@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(8)
    # Unequal channel ranges, so that a wrong grey formula changes the contrast mean.
    return rng.integers([0, 90, 30], [120, 256, 200], (24, 20, 3)).astype(np.uint8)


def luma(img):
    x = img.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.37])
def test_brightness_contrast_saturation_match_numpy_and_pillow(rgb, factor):
    x = rgb.astype(np.float64)
    clip = lambda a: np.clip(np.rint(a), 0, 255)  # noqa: E731
    mean_grey = int(luma(rgb).mean() + 0.5)
    grey = np.rint(luma(rgb))[..., None]
    cases = [
        (F.adjust_brightness, clip(factor * x), ImageEnhance.Brightness),
        (F.adjust_contrast, clip(mean_grey + factor * (x - mean_grey)), ImageEnhance.Contrast),
        (F.adjust_saturation, clip(grey + factor * (x - grey)), ImageEnhance.Color),
    ]
    pil = Image.fromarray(rgb)
    for op, ref, enhancer in cases:
        out = op(rgb, factor)
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        assert np.abs(out.astype(int) - ref).max() <= 1, op.__name__
        theirs = np.asarray(enhancer(pil).enhance(factor)).astype(int)
        assert np.abs(out.astype(int) - theirs).max() <= 1, op.__name__


def test_sharpness_matches_numpy_smoothing_blend(rgb):
    x = rgb.astype(np.float64)
    smooth = x.copy()
    acc = np.zeros_like(x[1:-1, 1:-1])
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            acc += x[1 + dy:x.shape[0] - 1 + dy, 1 + dx:x.shape[1] - 1 + dx]
    smooth[1:-1, 1:-1] = np.rint((acc + 4 * x[1:-1, 1:-1]) / 13.0)
    for factor in (0.5, 1.5):
        ref = np.clip(np.rint(smooth + factor * (x - smooth)), 0, 255)
        assert np.abs(F.adjust_sharpness(rgb, factor).astype(int) - ref).max() <= 1


def test_hue_shift_rotates_h_and_keeps_v(rgb):
    h_in = numpy_hue(rgb)
    chroma = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
    vivid = chroma >= 80  # hue is well defined there
    for delta in (-18, 7.6, 18, 100):
        out = F.adjust_hue(rgb, delta)
        assert np.abs(out.max(axis=2).astype(int) - rgb.max(axis=2)).max() <= 1
        diff = (numpy_hue(out) - h_in - round(delta) + 128) % 256 - 128
        assert np.abs(diff[vivid]).max() <= 2.5, delta
    np.testing.assert_array_equal(F.adjust_hue(rgb, 0), rgb)
    np.testing.assert_array_equal(F.adjust_hue(rgb, 256), rgb)


def test_random_distort_factors_probabilities_and_identity():
    grey = {"img": np.full((8, 8, 3), 100, np.uint8)}
    rng = np.random.default_rng(17)
    off = RandomDistort(brightness_prob=0, contrast_prob=0, saturation_prob=0, hue_prob=0)
    np.testing.assert_array_equal(off(grey, rng)["img"], grey["img"])
    t = RandomDistort(brightness_range=0.4, brightness_prob=0.5, contrast_prob=0,
                      saturation_prob=0, hue_prob=0)
    factors = np.array([t(grey, rng)["img"].mean() / 100.0 for _ in range(2000)])
    changed = factors[np.abs(factors - 1) > 0.006]
    assert abs(len(changed) - 1000) < 4 * np.sqrt(500)  # applied with probability 0.5
    assert changed.min() >= 0.6 - 0.006 and changed.max() <= 1.4 + 0.006
    assert changed.min() < 0.65 and changed.max() > 1.35  # the whole range is used
    # A float image (after padding) is rounded to uint8 first; output is uint8.
    out = t({"img": np.full((4, 4, 3), 127.5, np.float32)}, rng)["img"]
    assert out.dtype == np.uint8


# ----------------------------------------------------------------------------- resizing
def test_resize_family_output_sizes_rounding_and_trans_info():
    s = sample(h=5, w=8)
    out = ResizeByLong(4)(s)  # scale 0.5: h = round(2.5) = 2 (half to even, as PaddleSeg)
    assert out["img"].shape[:2] == (2, 4) and out["label"].shape == (2, 4)
    assert out["trans_info"] == [("resize", (5, 8))]
    out = ResizeByLong(10)(sample(h=5, w=7))  # 5 * 10/7 = 7.14 -> 7
    assert out["img"].shape[:2] == (7, 10)
    out = ResizeByShort(7)(s)  # 8 * 7/5 = 11.2 -> 11
    assert out["img"].shape[:2] == (7, 11) and out["fov"].shape == (7, 11)
    out = ResizeByShort(3)(sample(h=6, w=9))  # 9 * 0.5 = 4.5 -> 4
    assert out["img"].shape[:2] == (3, 4)
    out = Resize(target_size=(6, 3))(s)  # (w, h)
    assert out["img"].shape[:2] == (3, 6) and out["label"].shape == (3, 6)
    np.testing.assert_array_equal(out["img"], cv2.resize(s["img"], (6, 3)))
    np.testing.assert_array_equal(
        out["label"], cv2.resize(s["label"], (6, 3), interpolation=cv2.INTER_NEAREST))
    out = Resize(target_size=(8, 8), keep_ratio=True)(sample(h=10, w=20))
    assert out["img"].shape[:2] == (4, 8)  # scale min(8/20, 8/10) = 0.4
    out = Resize(target_size=(12, 30), keep_ratio=True)(sample(h=10, w=20))
    assert out["img"].shape[:2] == (12, 24)  # long side to 30 would need short 15 > 12
    chained = ResizeByShort(10)(ResizeByLong(4)(s))
    assert chained["trans_info"] == [("resize", (5, 8)), ("resize", (2, 4))]
    assert s["trans_info"] == []  # the input sample is untouched


def test_resize_random_interp_draws_from_rng():
    t = Resize(target_size=(5, 5), interp="RANDOM")
    a = t(sample(), np.random.default_rng(4))["img"]
    b = t(sample(), np.random.default_rng(4))["img"]
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- Padding / rotation
def test_padding_pads_bottom_right_and_records():
    s = sample(h=5, w=6)
    out = Padding(target_size=(9, 7))(s)  # (w, h)
    assert out["img"].shape == (7, 9, 3) and out["img"].dtype == np.float32
    np.testing.assert_array_equal(out["img"][:5, :6], s["img"])
    assert np.all(out["img"][5:] == 127.5) and np.all(out["img"][:, 6:] == 127.5)
    assert np.all(out["label"][5:] == 255) and np.all(out["label"][:, 6:] == 255)
    np.testing.assert_array_equal(out["label"][:5, :6], s["label"])
    assert np.all(out["fov"][5:] == 0)
    assert out["trans_info"] == [("padding", (5, 6))]
    same = Padding(target_size=(6, 5), im_padding_value=(1, 2, 3))(s)
    np.testing.assert_array_equal(same["img"], s["img"])
    out = Padding((7, 6), im_padding_value=(10, 20, 30))(s)
    np.testing.assert_array_equal(out["img"][5, 0], [10, 20, 30])


def test_random_rotation_keeps_label_values_and_expands_canvas():
    s = sample(h=20, w=14, labels=(0, 1, 4))
    s["label"] = s["label"].astype(np.int64)
    t = RandomRotation(max_rotation=30)
    angles = np.random.default_rng(6).uniform(-30, 30, 20)  # the transform's only draws
    rng = np.random.default_rng(6)
    saw_padding = False
    for angle in angles:
        out = t(s, rng)
        assert set(np.unique(out["label"])) <= {0, 1, 4, 255}
        assert set(np.unique(out["fov"])) <= {0, 1}
        assert out["label"].dtype == np.int64 and out["img"].dtype == np.float32
        # The canvas holds the whole rotated 14x20 rectangle.
        a = np.deg2rad(abs(angle))
        size = (int(20 * np.cos(a) + 14 * np.sin(a)), int(20 * np.sin(a) + 14 * np.cos(a)))
        assert out["img"].shape[:2] == out["label"].shape == out["fov"].shape == size
        if abs(angle) > 5:
            # Corners fall outside the source: padded with 127.5 / 255 / 0.
            assert out["label"][0, 0] == 255 and out["fov"][0, 0] == 0
            np.testing.assert_array_equal(out["img"][0, 0], [127.5] * 3)
            saw_padding = True
    assert saw_padding
    assert RandomRotation(max_rotation=0)(s, rng) is s
    # A 90-degree-free small rotation keeps the centre pixel's label.
    rot = RandomRotation(max_rotation=0.01)(s, rng)
    assert rot["label"].shape == s["label"].shape
    np.testing.assert_array_equal(rot["label"][2:-2, 2:-2], s["label"][2:-2, 2:-2])


# ----------------------------------------------------------------------------- pipeline
ALL_TRANSFORMS = [
    ResizeStepScaling(0.5, 2.0, 0.25), RandomPaddingCrop((8, 8)), RandomHorizontalFlip(1.0),
    RandomVerticalFlip(1.0), RandomDistort(hue_prob=1, sharpness_prob=1), Normalize(),
    Resize((6, 5)), ResizeByLong(9), ResizeByShort(4), RandomRotation(20), Padding((40, 40)),
]


@pytest.mark.parametrize("t", ALL_TRANSFORMS, ids=lambda t: type(t).__name__)
def test_every_transform_works_without_label_and_fov(t):
    s = {"img": sample()["img"], "trans_info": []}
    out = t(s, np.random.default_rng(0))
    assert "label" not in out and "fov" not in out
    assert out["img"].ndim == 3 and out["img"].shape[2] == 3


def test_inputs_are_never_modified():
    s = sample(h=30, w=26)
    copies = {k: v.copy() for k, v in s.items() if isinstance(v, np.ndarray)}
    pipeline = Compose(ALL_TRANSFORMS)
    pipeline(s, np.random.default_rng(1))
    for t in ALL_TRANSFORMS:
        t(s, np.random.default_rng(2))
    for key, value in copies.items():
        np.testing.assert_array_equal(s[key], value)
    assert s["trans_info"] == []


def test_same_seed_same_output_and_seeds_differ():
    pipeline = Compose([ResizeStepScaling(0.5, 2.0, 0.25), RandomPaddingCrop((16, 16)),
                        RandomHorizontalFlip(), RandomVerticalFlip(), RandomRotation(15),
                        RandomDistort(), Normalize()])
    s = sample(h=30, w=26)
    a = pipeline(s, np.random.default_rng(42))
    b = pipeline(s, np.random.default_rng(42))
    for key in ("img", "label", "fov"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["trans_info"] == b["trans_info"]
    outputs = [pipeline(s, np.random.default_rng(seed))["img"] for seed in range(5)]
    assert len({o.tobytes() for o in outputs}) == 5


def test_compose_output_is_chw_float32():
    s = sample(h=9, w=11)
    out = Compose([])(s)
    assert out["img"].shape == (3, 9, 11) and out["img"].dtype == np.float32
    assert out["img"].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out["img"], s["img"].transpose(2, 0, 1))  # no scaling
    out = Compose([Normalize()])(s)
    np.testing.assert_allclose(out["img"], s["img"].transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
    out = Compose([RandomHorizontalFlip(1.0)], to_rgb=False)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out["img"], s["img"][:, ::-1, ::-1].transpose(2, 0, 1))
    assert out["label"].flags["C_CONTIGUOUS"] and out["label"].dtype == np.uint8


@pytest.mark.parametrize("h, w, crop", [(40, 36, (16, 12)), (10, 9, (16, 12)), (30, 7, (12, 9))])
def test_fused_scale_crop_equals_the_two_steps(h, w, crop):
    transforms = [ResizeStepScaling(0.5, 2.0, 0.25), RandomPaddingCrop(crop)]
    fused, plain = Compose(transforms), Compose(transforms, fuse=False)
    assert type(fused._steps[0]).__name__ == "_ScaleThenCrop"
    s = sample(h=h, w=w, labels=(0, 1, 255))
    for seed in range(30):
        a = fused(s, np.random.default_rng(seed))
        b = plain(s, np.random.default_rng(seed))
        assert a["img"].shape == b["img"].shape == (3, crop[1], crop[0])
        assert np.abs(a["img"] - b["img"]).max() <= 1.0  # OpenCV warp vs resize rounding
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["fov"], b["fov"])
        assert a["trans_info"] == b["trans_info"] == [("resize", (h, w))]


def test_drive_train_pipeline_on_real_image():
    folder = os.path.join(SHARED_DATA, "DRIVE", "training")
    if not os.path.isdir(folder):
        pytest.skip(f"shared data not found at {folder} (set PADDLESEG_UNET_SHARED_DATA)")
    with Image.open(os.path.join(folder, "images", "21_training.tif")) as im:
        img = np.asarray(im.convert("RGB"))
    with Image.open(os.path.join(folder, "1st_manual", "21_manual1.gif")) as lab:
        label = (np.asarray(lab.convert("L")) > 0).astype(np.uint8)
    pipeline = Compose([{"type": "ResizeStepScaling", "min_scale_factor": 0.5,
                         "max_scale_factor": 2.0, "scale_step_size": 0.25},
                        {"type": "RandomPaddingCrop", "crop_size": [128, 128]},
                        {"type": "RandomHorizontalFlip"}, {"type": "RandomVerticalFlip"},
                        {"type": "RandomDistort", "brightness_range": 0.4,
                         "contrast_range": 0.4, "saturation_range": 0.4},
                        {"type": "Normalize"}])
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(20):
        out = pipeline({"img": img, "label": label}, rng)
        assert out["img"].shape == (3, 128, 128) and out["img"].dtype == np.float32
        assert -1.0 <= out["img"].min() and out["img"].max() <= 1.0
        assert set(np.unique(out["label"])) <= {0, 1}  # scale >= 0.5 never needs padding
        fractions.append(out["label"].mean())
    assert 0.03 < np.mean(fractions) < 0.2  # DRIVE vessels: ~8.6% of pixels
