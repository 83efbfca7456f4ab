"""Shared machinery of the dataset converters.

- :class:`Source` finds the files of a download wherever they are: a folder of extracted
  files, a folder holding the archives as downloaded, or one archive (zip, tar, tar.gz...).
  Members ending in ``.gz`` are decompressed on reading and matched without the suffix.
- :func:`staging` builds the output in a ``DST.tmp-<pid>`` sibling and renames it into place,
  so an interrupted run never leaves a half-written dataset under the DST name.
- :func:`convert_retina` writes the retina layout (images / annotations / fov + file lists)
  and gathers the statistics of the :class:`ConversionSummary`.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from paddleseg_unet.utils.io import replace_dir

PathLike = Union[str, "os.PathLike[str]"]
SPLITS: Tuple[str, ...] = ("train", "val")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# How many missing files one error message lists before it abbreviates.
_MAX_LISTED = 5


class ConversionError(Exception):
    """Bad input or destination; the message names the file and what to do."""


# --------------------------------------------------------------------------- discovery

@dataclass(frozen=True)
class Entry:
    """One file of the source, possibly inside an archive and/or gzip-compressed."""

    relpath: str  # posix path relative to SRC (archive members: archive dir + member), no .gz
    location: str  # human-readable place, for messages
    in_archive: bool
    gzipped: bool
    opener: Callable[[], bytes] = field(repr=False, compare=False)

    def read(self) -> bytes:
        """The file's bytes, gunzipped when stored as ``.gz``."""
        try:
            data = self.opener()
            return gzip.decompress(data) if self.gzipped else data
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise ConversionError(f"cannot read {self.location}: {exc}") from exc


def _archive_kind(path: Path) -> Optional[str]:
    low = path.name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith(_TAR_SUFFIXES):
        return "tar"
    return None


def _is_junk(name: str) -> bool:
    # macOS resource forks look like real files to a name pattern.
    return name.startswith("._") or name == ".DS_Store"


class Source:
    """All files reachable from SRC; use as a context manager (archives stay open)."""

    def __init__(self, src: PathLike, exclude: Optional[PathLike] = None) -> None:
        self.root = Path(src)
        self.entries: List[Entry] = []
        self._handles: list = []
        self._exclude = Path(exclude).resolve() if exclude is not None else None
        if not self.root.exists():
            raise ConversionError(f"SRC {self.root} does not exist")
        try:
            if self.root.is_dir():
                self._scan_folder()
            elif _archive_kind(self.root) is not None:
                self._add_archive(self.root, "")
            else:
                raise ConversionError(
                    f"SRC {self.root} is a file but not a zip or tar archive; pass the "
                    f"archive or the folder holding the dataset")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles.clear()

    def _skip_dir(self, path: Path) -> bool:
        if path.name == "__MACOSX":
            return True
        if self._exclude is None:
            return False
        # The destination and its staging/backup siblings must not feed a re-run.
        resolved = path.resolve()
        ex = self._exclude
        return resolved == ex or (resolved.parent == ex.parent
                                  and re.fullmatch(re.escape(ex.name) + r"\.(tmp|old)-\d+",
                                                   resolved.name) is not None)

    def _scan_folder(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not self._skip_dir(here / d))
            for fname in sorted(filenames):
                if _is_junk(fname):
                    continue
                path = here / fname
                rel = path.relative_to(self.root).as_posix()
                if _archive_kind(path) is not None:
                    parent = path.parent.relative_to(self.root).as_posix()
                    self._add_archive(path, "" if parent == "." else parent + "/")
                else:
                    self._add(rel, str(path), False, path.read_bytes)

    def _add(self, relpath: str, location: str, in_archive: bool,
             opener: Callable[[], bytes]) -> None:
        gzipped = relpath.lower().endswith(".gz") and not relpath.lower().endswith(".tar.gz")
        if gzipped:
            relpath = relpath[:-3]
        self.entries.append(Entry(relpath, location, in_archive, gzipped, opener))

    def _add_archive(self, path: Path, prefix: str) -> None:
        try:
            if _archive_kind(path) == "zip":
                zf = zipfile.ZipFile(path)
                self._handles.append(zf)
                for info in zf.infolist():
                    if info.is_dir() or _is_junk(info.filename.rsplit("/", 1)[-1]) \
                            or info.filename.startswith("__MACOSX/"):
                        continue
                    self._add(prefix + info.filename, f"{info.filename} (in {path})", True,
                              lambda zf=zf, info=info: zf.read(info))
            else:
                tf = tarfile.open(path, "r:*")
                self._handles.append(tf)
                for member in tf.getmembers():
                    name = member.name
                    while name.startswith("./"):
                        name = name[2:]
                    if not member.isfile() or _is_junk(name.rsplit("/", 1)[-1]) \
                            or name.startswith("__MACOSX/"):
                        continue
                    self._add(prefix + name, f"{name} (in {path})", True,
                              lambda tf=tf, member=member: tf.extractfile(member).read())
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as exc:
            raise ConversionError(f"cannot open archive {path}: {exc}; re-download it") from exc

    def index(self, pattern: str,
              key: Callable[[re.Match], str] = lambda m: m.group("key")) -> Dict[str, Entry]:
        """Entries whose relpath matches ``pattern`` (re.search), by ``key(match)``.

        A plain file wins over an archive member with the same key (a folder may hold both
        the extracted tree and the archive); two of the same kind are ambiguous.
        """
        regex = re.compile(pattern)
        found: Dict[str, Entry] = {}
        for entry in self.entries:
            m = regex.search(entry.relpath)
            if m is None:
                continue
            k = key(m)
            other = found.get(k)
            if other is None or (other.in_archive and not entry.in_archive):
                found[k] = entry
            elif other.in_archive == entry.in_archive:
                raise ConversionError(
                    f"{entry.relpath} is found twice: {other.location} and {entry.location}; "
                    f"keep one copy in SRC")
        return found


def require(found: Dict[str, Entry], key: str, expected: str,
            missing: List[str]) -> Optional[Entry]:
    """``found[key]``, or None after recording ``expected`` (a display path) as missing."""
    entry = found.get(key)
    if entry is None:
        missing.append(expected)
    return entry


def raise_if_missing(dataset: str, missing: Sequence[str], src: PathLike) -> None:
    if not missing:
        return
    listed = ", ".join(missing[:_MAX_LISTED])
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    raise ConversionError(f"{dataset}: missing file {listed}{more} in {src}; "
                          f"check the download is complete")


# ------------------------------------------------------------------------ image I/O

def decode_image(data: bytes, location: str) -> Image.Image:
    """Decode with Pillow, fully (so truncated files fail here, naming ``location``)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ConversionError(f"cannot read image {location}: {exc}") from exc
    return image


def open_image(entry: Entry) -> Image.Image:
    return decode_image(entry.read(), entry.location)


def read_rgb(entry: Entry) -> np.ndarray:
    """HxWx3 uint8 RGB."""
    image = open_image(entry)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise ConversionError(f"{entry.location}: {image.mode} image, expected 8-bit colour")
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def binarize(grey: np.ndarray) -> np.ndarray:
    """0/1 uint8: foreground = brighter than the midpoint of the file's grey-level range.

    Works for 0/255, 0/1 index images and palettes whose "black" and "white" are not 0
    and 255 (the DRIVE 2nd_manual GIFs map index 0/1 to grey 3/253).
    """
    lo, hi = (int(grey.min()), int(grey.max())) if grey.size else (0, 0)
    if lo == hi:  # no contrast: an empty label/mask, or (rarely) an all-foreground one
        full_scale = 255 if grey.dtype == np.uint8 else 1
        return np.full(grey.shape, int(hi * 2 > full_scale), np.uint8)
    return (grey > (lo + hi) // 2).astype(np.uint8)  # integer form of "> (lo + hi) / 2"


def read_binary(entry: Entry) -> np.ndarray:
    """A label or mask as HxW uint8 0/1, read through its palette / as grey."""
    image = open_image(entry)
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(image)
    else:
        grey = np.asarray(image.convert("L"))
    return binarize(grey)


def check_size(entry: Entry, array: np.ndarray, image_entry: Entry,
               shape: Tuple[int, int]) -> None:
    if array.shape[:2] != tuple(shape):
        (h, w), (ih, iw) = array.shape[:2], shape
        raise ConversionError(f"{entry.location} is {w}x{h} but its image "
                              f"{image_entry.location} is {iw}x{ih}; replace the file")


def write_bytes(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ConversionError(f"cannot write {path}: {exc}") from exc


def write_png(path: Path, array: np.ndarray) -> None:
    """Lossless PNG of an HxW grey or HxWx3 RGB uint8 array."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
                           if array.ndim == 3 else array)
    if not ok:
        raise ConversionError(f"cannot encode {path} as PNG")
    write_bytes(path, buf.tobytes())


def write_lists(out: Path, lists: Dict[str, List[str]]) -> None:
    for split, lines in lists.items():
        write_bytes(out / f"{split}_list.txt", "".join(line + "\n" for line in lines).encode())


# --------------------------------------------------------------------------- FOV

def derive_fov(rgb: np.ndarray) -> np.ndarray:
    """Field-of-view mask (0/1 uint8) of a fundus photograph without one.

    The camera leaves a dark border around the bright, red-dominated fundus. On the red
    channel (median-filtered against sensor and JPEG noise) take the border level ``b``
    (median of a frame 1% of the short side wide) and the fundus level ``f`` (median of the
    pixels above Otsu's threshold); keep pixels above ``b + 0.15 (f - b)``, close the result
    (a disc 3% of the short side wide, to bridge dark vessels), then keep the largest
    8-connected component, with its holes (dark lesions, vessels) filled.
    """
    red = cv2.medianBlur(np.ascontiguousarray(rgb[..., 0]), 5)
    h, w = red.shape
    m = max(2, round(0.01 * min(h, w)))
    frame = np.concatenate([red[:m].ravel(), red[-m:].ravel(),
                            red[:, :m].ravel(), red[:, -m:].ravel()])
    border = float(np.median(frame))
    otsu, _ = cv2.threshold(red, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = red[red > otsu]
    fundus = float(np.median(bright)) if bright.size else border
    mask = (red > border + 0.15 * (fundus - border)).astype(np.uint8)
    # A closing bridges dark vessels that would otherwise cut the fundus into pieces.
    # Done with distance transforms (a disc of radius r, cost independent of r); padding
    # with background keeps it from gluing the fundus to the image edge.
    radius = round(0.015 * min(h, w))
    pad = radius + 1
    padded = np.pad(mask, pad)
    grown = (cv2.distanceTransform(1 - padded, cv2.DIST_L2, 5) <= radius).astype(np.uint8)
    closed = (cv2.distanceTransform(grown, cv2.DIST_L2, 5) > radius).astype(np.uint8)
    mask = np.ascontiguousarray(closed[pad:-pad, pad:-pad])
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Fill holes: flood the background from outside; what the flood misses is a hole.
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = labels == largest
    cv2.floodFill(padded, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    return (padded[1:-1, 1:-1] != 2).astype(np.uint8)


# ------------------------------------------------------------------------ output

def check_destination(src: PathLike, dst: PathLike, force: bool) -> None:
    """Refuse a non-empty DST without ``force``, a DST that is a file or that holds SRC."""
    src_r, dst_r = Path(src).resolve(), Path(dst).resolve()
    if dst_r == src_r or dst_r in src_r.parents:
        raise ConversionError(f"DST {dst} would contain SRC {src}; choose a DST outside SRC")
    dst = Path(dst)
    if dst.exists():
        if not dst.is_dir():
            raise ConversionError(f"DST {dst} exists and is not a folder; choose another DST")
        if not force and any(dst.iterdir()):
            raise ConversionError(f"DST {dst} exists and is not empty; pass --force to "
                                  f"replace it")


@contextmanager
def staging(dst: PathLike, force: bool) -> Iterator[Path]:
    """Yield an empty ``DST.tmp-<pid>`` folder; on success it replaces DST, else it goes."""
    dst = Path(dst)
    tmp = dst.parent / f"{dst.name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():  # left by a killed run that had our pid
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise ConversionError(f"cannot create {tmp}: {exc}") from exc
    try:
        yield tmp
        _publish(tmp, dst, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, dst: Path, force: bool) -> None:
    if not dst.exists():
        os.replace(tmp, dst)
        return
    if dst.is_dir() and not any(dst.iterdir()):
        os.replace(tmp, dst)  # rename(2) may replace an empty directory
        return
    if not force:  # appeared while we were converting
        raise ConversionError(f"DST {dst} exists and is not empty; pass --force to replace it")
    replace_dir(str(tmp), str(dst))


# ------------------------------------------------------------------------ summary

_STAT_TEXT = {
    "vessel_fraction": "vessel pixels / all pixels",
    "vessel_fraction_in_fov": "vessel pixels / FOV pixels",
    "fov_fraction": "FOV pixels / all pixels",
    "vessel_outside_fov": "vessel pixels outside the FOV",
    "ignore_fraction": "ignored (255) pixels / all pixels",
}


@dataclass
class ConversionSummary:
    """What a conversion wrote; ``format()`` is the text the CLI prints."""

    dataset: str
    dst: str
    counts: Dict[str, int]
    stats: Dict[str, float] = field(default_factory=dict)  # fractions in [0, 1]
    expected: str = ""  # published figures to compare the stats with
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # results the user should check

    def format(self) -> str:
        counts = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        lines = [f"{self.dataset} -> {self.dst}", f"  images: {counts}"]
        lines += [f"  {_STAT_TEXT.get(k, k)}: {v:.2%}" for k, v in self.stats.items()]
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        lines += [f"  skipped {s}" for s in self.skipped]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ------------------------------------------------------------------------ retina

@dataclass(frozen=True)
class RetinaItem:
    name: str  # output file stem
    split: str  # "train" or "val"
    image: Entry
    label: Entry
    fov: Optional[Entry] = None  # None: derive it from the image (derive_fov)


@dataclass
class RetinaPlan:
    """What a dataset module found in SRC: the items to write and what to report."""

    items: List[RetinaItem] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # expected display paths not found
    skipped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def add_pairs(self, names: Sequence[str], n_train: int, images: Dict[str, Entry],
                  labels: Dict[str, Entry], expected: Callable[[str], Tuple[str, str]]) -> None:
        """Image + label (FOV derived) for each of ``names``, sorted; the first n_train train.

        ``expected(name)`` gives the display paths of the image and label, for errors.
        """
        for i, name in enumerate(sorted(names)):
            image_path, label_path = expected(name)
            image = require(images, name, image_path, self.missing)
            label = require(labels, name, label_path, self.missing)
            if image and label:
                self.items.append(RetinaItem(name, "train" if i < n_train else "val",
                                             image, label))


def run_retina(dataset: str, src: PathLike, dst: PathLike, force: bool,
               collect: Callable[[Source], RetinaPlan], expected: str) -> ConversionSummary:
    """Check DST, scan SRC, let ``collect`` plan the items, then write them atomically."""
    check_destination(src, dst, force)
    with Source(src, exclude=dst) as source:
        plan = collect(source)
        raise_if_missing(dataset, plan.missing, src)
        return convert_retina(dataset, plan.items, dst, force, expected, plan.skipped,
                              plan.notes)


def convert_retina(dataset: str, items: Sequence[RetinaItem], dst: PathLike, force: bool,
                   expected: str = "", skipped: Sequence[str] = (),
                   notes: Sequence[str] = ()) -> ConversionSummary:
    """Write ``DST/{images,annotations,fov}/{split}/NAME.png`` and the file lists."""
    if not items:
        raise ConversionError(f"{dataset}: no labelled images found")
    notes = list(notes)
    lists: Dict[str, List[str]] = {split: [] for split in SPLITS}
    totals = np.zeros(4, np.int64)  # all pixels, vessel, FOV, vessel inside FOV
    with staging(dst, force) as out:
        for item in tqdm(items, desc=dataset, unit="img", disable=None, leave=False):
            image = read_rgb(item.image)
            shape = image.shape[:2]
            label = read_binary(item.label)
            check_size(item.label, label, item.image, shape)
            if item.fov is None:
                fov = derive_fov(image)
                if not 0.2 < fov.mean() < 0.99:
                    notes.append(f"derived FOV of {item.name} covers {fov.mean():.0%} of the "
                                 f"image; check fov/{item.split}/{item.name}.png")
            else:
                fov = read_binary(item.fov)
                check_size(item.fov, fov, item.image, shape)
            if not label.any():
                notes.append(f"{item.label.location} has no vessel pixels")
            rel = {kind: f"{kind}/{item.split}/{item.name}.png"
                   for kind in ("images", "annotations", "fov")}
            write_png(out / rel["images"], image)
            write_png(out / rel["annotations"], label)
            write_png(out / rel["fov"], fov)
            lists[item.split].append(f"{rel['images']} {rel['annotations']}")
            totals += (label.size, int(label.sum()), int(fov.sum()), int((label & fov).sum()))
        write_lists(out, lists)
    pixels, vessel, fov_px, vessel_in = (int(v) for v in totals)
    stats = {"vessel_fraction": vessel / pixels,
             "vessel_fraction_in_fov": vessel_in / max(fov_px, 1),
             "fov_fraction": fov_px / pixels,
             "vessel_outside_fov": (vessel - vessel_in) / max(vessel, 1)}
    return ConversionSummary(dataset, str(dst), {s: len(v) for s, v in lists.items()},
                             stats, expected, list(skipped), notes)


class ArchiveConverter:
    """A converter from an official download (``SRC``: the extracted folder, a folder of the
    archives, or one archive) to ``DST``; registered in ``CONVERTERS`` under its dataset
    name. Every converter offers ``add_arguments(parser)`` and ``run(args)``, which is all
    ``tools/convert_dataset.py NAME ...`` needs."""

    def __init__(self, fn: Callable[..., "ConversionSummary"], description: str) -> None:
        self.fn = fn
        self.description = description

    def __call__(self, src: PathLike, dst: PathLike, force: bool = False) -> "ConversionSummary":
        return self.fn(src, dst, force=force)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("src", help="extracted folder, folder of archives, or one archive")
        parser.add_argument("dst", help="output folder (built atomically)")
        parser.add_argument("--force", action="store_true", help="replace a non-empty DST")

    def run(self, args: Any) -> "ConversionSummary":
        return self(args.src, args.dst, force=args.force)


def archive_converter(description: str) -> Callable[[Callable[..., "ConversionSummary"]],
                                                    ArchiveConverter]:
    """Decorator: ``@CONVERTERS.register("name") @archive_converter("what it reads")``."""
    return lambda fn: ArchiveConverter(fn, description)
