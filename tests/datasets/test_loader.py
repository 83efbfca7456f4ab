"""Samplers and build_dataloader: determinism, sharding, wrapping, collation, reader cost."""
import os
import time

import cv2
import numpy as np
import pytest

from paddleseg_unet.datasets import (Dataset, DatasetError, DistributedInfiniteSampler,
                                     EvalSampler, InfiniteSampler, ReaderCostTimer,
                                     build_dataloader)

TRAIN_T = [{"type": "RandomPaddingCrop", "crop_size": [8, 8]},
           {"type": "RandomHorizontalFlip"},
           {"type": "RandomDistort", "brightness_range": 0.4},
           {"type": "Normalize"}]


def tiny_set(root, n, mode="train", transforms=TRAIN_T, sizes=None):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        h, w = sizes[i] if sizes else (12, 10)
        os.makedirs(os.path.join(root, "img"), exist_ok=True)
        os.makedirs(os.path.join(root, "lab"), exist_ok=True)
        cv2.imwrite(os.path.join(root, "img", f"{i}.png"),
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        cv2.imwrite(os.path.join(root, "lab", f"{i}.png"),
                    rng.integers(0, 2, (h, w), dtype=np.uint8))
        lines.append(f"img/{i}.png lab/{i}.png")
    with open(os.path.join(root, "list.txt"), "w") as f:
        f.write("\n".join(lines))
    return Dataset(str(root), transforms, 2, mode=mode, train_path="list.txt",
                   val_path="list.txt")


def take(loader, n):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


# -- samplers ----------------------------------------------------------------------------
def test_infinite_sampler_epochs_are_permutations():
    sampler = InfiniteSampler(10, 4, seed=3)
    it = iter(sampler)
    keys = [k for _ in range(10) for k in next(it)]  # 40 positions = 4 epochs
    assert [k[2] for k in keys] == list(range(40))  # draws: unique stream positions
    assert all(k[1] == 3 for k in keys)
    epochs = [[k[0] for k in keys[e * 10:(e + 1) * 10]] for e in range(4)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert len({tuple(o) for o in epochs}) == 4  # reshuffled every epoch
    assert [k[0] for k in keys] == [k[0] for b in range(10) for k in sampler.batch(b)]
    other = [k[0] for b in range(3) for k in InfiniteSampler(10, 4, seed=4).batch(b)]
    assert other != [k[0] for k in keys[:12]]
    assert sampler.epoch(0) == 1 and sampler.epoch(3) == 2


def test_small_dataset_wraps_into_full_batches():
    sampler = InfiniteSampler(3, 4, seed=0)
    batch = next(iter(sampler))
    assert len(batch) == 4 and {k[0] for k in batch} == {0, 1, 2}


def test_start_iter_resumes_stream():
    resumed = next(iter(InfiniteSampler(7, 3, seed=1, start_iter=5)))
    assert resumed == InfiniteSampler(7, 3, seed=1).batch(5)


def test_distributed_shards_disjoint_and_cover_global_stream():
    single = InfiniteSampler(8, 4, seed=2)
    ranks = [DistributedInfiniteSampler(8, 2, rank=r, world_size=2, seed=2) for r in (0, 1)]
    for it in range(4):
        parts = [s.batch(it) for s in ranks]
        assert parts[0] + parts[1] == single.batch(it)
    first_epoch = [k[0] for it in range(2) for s in ranks for k in s.batch(it)]
    assert sorted(first_epoch) == list(range(8))
    with pytest.raises(ValueError, match="rank"):
        DistributedInfiniteSampler(8, 2, rank=2, world_size=2)


def test_eval_sampler_shards_without_padding():
    shards = [EvalSampler(10, 2, rank=r, world_size=3) for r in range(3)]
    flat = [[k[0] for b in s for k in b] for s in shards]
    assert [len(f) for f in flat] == [3, 3, 4]
    assert sum(flat, []) == list(range(10))
    assert [len(s) for s in shards] == [2, 2, 2]
    assert len(EvalSampler(5, 2, drop_last=True)) == 2


# -- loader ------------------------------------------------------------------------------
def test_loader_deterministic_across_workers(tmp_path):
    ds = tiny_set(tmp_path, 5)
    runs = {}
    for workers, seed in ((0, 7), (2, 7), (0, 8)):
        batches = take(build_dataloader(ds, 3, num_workers=workers, seed=seed), 4)
        runs[(workers, seed)] = [(b["img"].numpy(), b["label"].numpy()) for b in batches]
    a, b, c = runs[(0, 7)], runs[(2, 7)], runs[(0, 8)]
    assert a[0][0].shape == (3, 3, 8, 8) and a[0][0].dtype == np.float32
    assert a[0][1].shape == (3, 8, 8) and a[0][1].dtype == np.int64
    for (ia, la), (ib, lb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    # an independent recomputation of one sample from its key
    key = InfiniteSampler(5, 3, seed=7).batch(2)[1]
    np.testing.assert_array_equal(a[2][0][1], ds[key]["img"])


def test_train_set_smaller_than_batch(tmp_path):
    ds = tiny_set(tmp_path, 3)
    batch = take(build_dataloader(ds, 4, seed=0), 1)[0]
    assert tuple(batch["img"].shape) == (4, 3, 8, 8) and len(batch["name"]) == 4


def test_val_loader_keeps_per_sample_fields(tmp_path):
    sizes = [(12, 10), (7, 9), (12, 10)]
    ds = tiny_set(tmp_path, 3, mode="val",
                  transforms=[{"type": "Resize", "target_size": [6, 4]},
                              {"type": "Normalize"}], sizes=sizes)
    loader = build_dataloader(ds, 2)
    batches = list(loader)
    assert len(loader) == 2 and len(batches) == 2
    first = batches[0]
    assert tuple(first["img"].shape) == (2, 3, 4, 6)
    assert [tuple(lab.shape) for lab in first["label"]] == sizes[:2]
    assert first["trans_info"] == [[("resize", (12, 10))], [("resize", (7, 9))]]
    assert first["name"] == ["0", "1"] and len(batches[1]["label"]) == 1


def test_train_batch_of_mixed_sizes_is_explained(tmp_path):
    ds = tiny_set(tmp_path, 2, transforms=[{"type": "Normalize"}], sizes=[(12, 10), (7, 9)])
    with pytest.raises(DatasetError, match="differ in shape"):
        take(build_dataloader(ds, 2), 1)


def test_reader_cost_timer():
    def slow():
        for i in range(3):
            time.sleep(0.02)
            yield i

    timer = ReaderCostTimer()
    assert list(timer.wrap(slow())) == [0, 1, 2]
    assert timer.count == 3 and timer.last >= 0.015 and timer.average() >= 0.015
    timer.reset()
    assert timer.count == 0 and timer.average() == 0.0


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_file_error_reaches_consumer(tmp_path, workers):
    # paddle alone would hang (0 workers) or raise a generic SystemError (workers)
    ds = tiny_set(tmp_path, 3)
    with open(os.path.join(tmp_path, "lab", "1.png"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(DatasetError) as e:
        take(build_dataloader(ds, 3, num_workers=workers), 1)
    assert "list.txt line 2" in str(e.value) and "1.png" in str(e.value)
