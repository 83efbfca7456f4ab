"""Samplers and the data loader: deterministic whatever the number of workers.

Determinism by design: the samplers yield *sample keys* ``(index, seed, draw)`` instead
of bare indices, and a dataset builds each sample's generator from ``(seed, draw)``
(see :func:`paddleseg_unet.datasets.dataset.sample_rng`). ``draw`` is the sample's
position in one global stream shared by all ranks, so every augmentation is fixed by
(seed, position) alone: the batches are the same with 0, 2 or 8 workers, and the
ranks' batches of W devices concatenate to the single-process batch of size B*W.

Training stream: epoch ``e`` is the permutation drawn from ``SeedSequence([seed, e,
tag])``; the stream is the concatenation of the epochs' permutations. Global batch
``i`` is stream positions ``[i*B*W, (i+1)*B*W)`` (B per-device batch, W world size) and
rank ``r`` takes the ``r``-th block of B. Batches run across epoch boundaries, so every
batch is full (a dataset smaller than the batch is simply wrapped) and there is no
stall or partial batch at an epoch's end. Batch ``i`` is a pure function of ``i``,
which makes resuming exact (``start_iter``).
"""
from __future__ import annotations

import math
import time
import traceback
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from paddleseg_unet.datasets.image_io import DatasetError

__all__ = ["InfiniteSampler", "DistributedInfiniteSampler", "EvalSampler", "ReaderCostTimer",
           "SegDataLoader", "build_dataloader", "collate_train", "collate_eval"]

Key = Tuple[int, int, int]
_SHUFFLE_TAG = 0x53485546  # separates shuffle streams from per-sample streams


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class DistributedInfiniteSampler:
    """Endless shuffled batches of keys for rank ``rank`` of ``world_size``.

    All ranks walk the same global permutation stream; each takes its own block of
    ``batch_size`` positions from every global batch, so the ranks' samples of one step
    are disjoint (unless the dataset is smaller than the global batch).
    """

    def __init__(self, dataset_size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_iter: int = 0, shuffle: bool = True) -> None:
        self.dataset_size = _check_int("dataset_size", dataset_size, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank {rank} must be smaller than world_size {world_size}")
        self.seed = _check_int("seed", seed, 0)
        self.start_iter = _check_int("start_iter", start_iter, 0)
        self.shuffle = bool(shuffle)
        self._perms: Dict[int, np.ndarray] = {}

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The dataset order of ``epoch`` (identity when shuffle is off)."""
        perm = self._perms.get(epoch)
        if perm is None:
            if self.shuffle:
                rng = np.random.Generator(np.random.PCG64(
                    np.random.SeedSequence([self.seed, epoch, _SHUFFLE_TAG])))
                perm = rng.permutation(self.dataset_size)
            else:
                perm = np.arange(self.dataset_size)
            if len(self._perms) >= 4:  # a batch spans at most a few epochs
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def batch(self, iteration: int) -> List[Key]:
        """The keys of this rank's part of global batch ``iteration``."""
        start = iteration * self.global_batch_size + self.rank * self.batch_size
        keys = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.dataset_size)
            keys.append((int(self.permutation(epoch)[offset]), self.seed, position))
        return keys

    def epoch(self, iteration: int) -> int:
        """1-based epoch that global batch ``iteration`` (0-based) starts in."""
        return iteration * self.global_batch_size // self.dataset_size + 1

    def __iter__(self) -> Iterator[List[Key]]:
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1


class InfiniteSampler(DistributedInfiniteSampler):
    """Endless shuffled batches of keys for a single process."""

    def __init__(self, dataset_size: int, batch_size: int, seed: int = 0,
                 start_iter: int = 0, shuffle: bool = True) -> None:
        super().__init__(dataset_size, batch_size, 0, 1, seed, start_iter, shuffle)


class EvalSampler:
    """Finite, in-order batches for evaluation, sharded over ranks without padding.

    Rank ``r`` gets the contiguous slice ``[floor(r*N/W), floor((r+1)*N/W))``: every
    sample is scored exactly once, and the shards differ in size by at most one, so
    ranks may run a different number of batches. Reduce metrics once at the end
    (sum the confusion matrices), never with a per-batch collective.
    Keys are ``(index, seed, index)``.
    """

    def __init__(self, dataset_size: int, batch_size: int = 1, rank: int = 0,
                 world_size: int = 1, seed: int = 0, drop_last: bool = False) -> None:
        self.dataset_size = _check_int("dataset_size", dataset_size, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        world_size = _check_int("world_size", world_size, 1)
        rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank {rank} must be smaller than world_size {world_size}")
        self.seed = _check_int("seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.indices = range(self.dataset_size * rank // world_size,
                             self.dataset_size * (rank + 1) // world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.indices) // self.batch_size
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[List[Key]]:
        for b in range(len(self)):
            chunk = self.indices[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(i, self.seed, i) for i in chunk]


# -- collation ---------------------------------------------------------------------
_STACKED = ("img", "label", "edge")


def _stack(samples: Sequence[Dict[str, Any]], key: str) -> np.ndarray:
    arrays = [np.asarray(s[key]) for s in samples]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        detail = ", ".join(f"{s.get('name', '?')}: {a.shape}" for s, a in zip(samples, arrays))
        raise DatasetError(
            f"Cannot batch '{key}': samples differ in shape ({detail}). Make the train "
            "transforms produce one size (e.g. RandomPaddingCrop with a crop_size), or "
            "use batch_size 1.")
    return np.stack(arrays)


def collate_train(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack img (B,C,H,W float32), label (B,H,W int64) and edge; other fields -> lists."""
    return {key: _stack(samples, key) if key in _STACKED else [s.get(key) for s in samples]
            for key in samples[0]}


def collate_eval(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack img when the shapes agree (else a list); label, fov, trans_info, names... stay
    per-sample lists, since they keep each image's original size."""
    batch = {key: [s.get(key) for s in samples] for key in samples[0]}
    if len({np.shape(img) for img in batch["img"]}) == 1:
        batch["img"] = np.stack(batch["img"])
    return batch


def _restore_trans_info(batch: Dict[str, Any]) -> Dict[str, Any]:
    """paddle's collation turns tuples into lists; give trans_info back its
    ``(op, (h, w))`` tuples."""
    infos = batch.get("trans_info")
    if isinstance(infos, list):
        batch["trans_info"] = [[(str(op), tuple(int(v) for v in size)) for op, size in info]
                               for info in infos]
    return batch


# -- errors across the reader boundary ----------------------------------------------
# paddle's DataLoader handles an exception raised by the dataset or collate_fn badly:
# with num_workers=0 its reader thread dies and the consumer waits forever; with
# workers the caller gets a generic "blocking queue is killed" SystemError. So errors
# travel in-band instead: the failing sample becomes a marker, the marker becomes an
# error batch, and SegDataLoader raises it in the consumer with the original message.
_ERROR_KEY = "__reader_error__"


def _error_payload(exc: BaseException) -> List[str]:
    kind = "DatasetError" if isinstance(exc, DatasetError) else type(exc).__name__
    detail = str(exc)
    if not isinstance(exc, DatasetError):
        detail += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return [kind, detail]


class _ErrorsInBand:
    """Dataset wrapper: an exception while loading becomes an error-marker sample."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Dict[str, Any]:
        try:
            return self.dataset[key]
        except Exception as exc:  # re-raised in the consumer by SegDataLoader
            return {_ERROR_KEY: _error_payload(exc)}


class _CollateErrorsInBand:
    def __init__(self, collate: Any) -> None:
        self.collate = collate

    @staticmethod
    def _error_batch(payload: List[str]) -> Dict[str, Any]:
        # paddle ends the iteration on a batch without any array: carry a dummy one.
        return {_ERROR_KEY: payload, "_": np.zeros(1, np.uint8)}

    def __call__(self, samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        for sample in samples:
            if _ERROR_KEY in sample:
                return self._error_batch(sample[_ERROR_KEY])
        try:
            return self.collate(samples)
        except Exception as exc:
            return self._error_batch(_error_payload(exc))


def _raise_if_error(batch: Any) -> None:
    if isinstance(batch, dict) and _ERROR_KEY in batch:
        kind, detail = batch[_ERROR_KEY]
        if kind == "DatasetError":
            raise DatasetError(detail)
        raise RuntimeError(f"Reading a batch failed with {kind}: {detail}")


# -- timing & loader -----------------------------------------------------------------
class ReaderCostTimer:
    """Measures the time spent waiting for each batch of a wrapped iterable.

    ``last`` is the latest wait, ``average()`` the mean since ``reset()``.
    """

    def __init__(self) -> None:
        self.last = 0.0
        self.total = 0.0
        self.count = 0

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def average(self) -> float:
        return self.total / self.count if self.count else 0.0

    def wrap(self, iterable: Iterable[Any]) -> Iterator[Any]:
        iterator = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self.last = time.perf_counter() - start
            self.total += self.last
            self.count += 1
            yield item


class SegDataLoader:
    """Iterable over collated batches: dicts whose arrays paddle made into Tensors.

    Train batches: ``img`` [B,C,H,W] float32, ``label`` [B,H,W] int64 (``edge`` too),
    ``name``/``img_path``/... lists. Eval batches: ``img`` stacked when the sizes agree
    (else a list), and per-sample lists of ``label``/``fov`` Tensors at original size,
    ``trans_info`` (lists of ``(op, (h, w))``), ``name``...
    Train loaders are endless; eval loaders have ``len()``. ``reader_cost`` times the
    wait for each batch; ``batch_sampler`` exposes the sampler (e.g. its ``epoch()``).
    A dataset error raised in a reader is re-raised here with its original message.
    """

    def __init__(self, loader: Any, batch_sampler: Any, mode: str) -> None:
        self.loader = loader
        self.batch_sampler = batch_sampler
        self.mode = mode
        self.reader_cost = ReaderCostTimer()

    def __len__(self) -> int:
        if not hasattr(self.batch_sampler, "__len__"):
            raise TypeError("a train loader is endless and has no length")
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        iterator = iter(self.loader)
        try:
            for batch in self.reader_cost.wrap(iterator):
                _raise_if_error(batch)
                yield _restore_trans_info(batch)
        finally:
            # Stop the worker processes as soon as the consumer is done (break, error,
            # garbage collection) instead of at interpreter exit.
            shutdown = getattr(iterator, "_try_shutdown_all", None)
            if shutdown is not None:
                shutdown()


def build_dataloader(dataset: Any, batch_size: int, mode: Optional[str] = None,
                     num_workers: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1,
                     drop_last: bool = False, start_iter: int = 0,
                     use_shared_memory: bool = True) -> SegDataLoader:
    """A ``paddle.io.DataLoader`` over ``dataset`` driven by the samplers above.

    ``mode`` (default: ``dataset.mode``) 'train' gives an endless shuffled loader
    (``drop_last`` is moot: every batch is full); 'val'/'test' a finite in-order one,
    sharded over ranks without padding (``drop_last`` drops a short final batch).
    ``start_iter`` resumes a train stream exactly.
    """
    import paddle

    mode = str(mode or getattr(dataset, "mode", "train")).lower()
    if len(dataset) == 0:
        raise DatasetError(f"{type(dataset).__name__} ({mode}) has no samples")
    num_workers = _check_int("num_workers", num_workers, 0)
    if mode == "train":
        sampler: Any = DistributedInfiniteSampler(len(dataset), batch_size, rank, world_size,
                                                  seed, start_iter)
        collate = collate_train
    elif mode in ("val", "test"):
        sampler = EvalSampler(len(dataset), batch_size, rank, world_size, seed, drop_last)
        collate = collate_eval
    else:
        raise ValueError(f"mode must be 'train', 'val' or 'test', got {mode!r}")
    loader = paddle.io.DataLoader(
        _ErrorsInBand(dataset), batch_sampler=sampler,
        collate_fn=_CollateErrorsInBand(collate), num_workers=num_workers,
        use_shared_memory=use_shared_memory and num_workers > 0)
    # No worker_init_fn: calling cv2.setNumThreads in a forked worker can deadlock in
    # pthread_cond_destroy when the parent's OpenCV pool was busy at fork time (seen in the
    # test suite). Workers need no seeding either: samples carry their own keys.
    return SegDataLoader(loader, sampler, mode)
