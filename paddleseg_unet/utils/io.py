"""Writing files so that a crash never leaves a half-written one under the final name."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import IO, Iterator, Optional


class OutputPathError(Exception):
    """An output folder or file that cannot be written; the message names it and what to do."""


def check_writable_dir(path: str, what: str = "output folder") -> None:
    """Create the folder ``path`` if missing and prove that a file can be written in it, so
    a run fails at once (not after its work) when its outputs could not be saved. A real
    write is the only test that holds for root, read-only mounts and full disks alike."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputPathError(f"{what} {path} is an existing file, not a folder; give a folder "
                              f"path (it is created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        blocker = _existing_file_on_the_way(path)
        reason = (f"{blocker} is a file, not a folder" if blocker
                  else exc.strerror or type(exc).__name__)
        raise OutputPathError(f"{what} {path} cannot be written ({reason}); give a folder "
                              f"you can write to") from None


def check_writable_file(path: str, what: str = "output file") -> None:
    """``path`` can be (over)written: it is not a folder and its folder is writable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputPathError(f"{what} {path} is a folder; give a file path, e.g. "
                              f"{os.path.join(path, 'metrics.json')}")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"{what} {path}: its folder")


def _existing_file_on_the_way(path: str) -> Optional[str]:
    """The first existing non-folder among ``path``'s parents (the reason makedirs fails)."""
    current = os.path.abspath(path)
    while True:
        if os.path.exists(current) and not os.path.isdir(current):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; results should get the permissions any new file gets.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", encoding: Optional[str] = None) -> Iterator[IO]:
    """``with atomic_write(path) as f: ...`` writes a temporary file beside ``path``, flushes
    it to disk and renames it over ``path`` only when the block finishes without error."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        if hasattr(os, "fchmod"):  # POSIX; Windows files have no mode bits to widen
            os.fchmod(fd, _default_file_mode())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)


def fsync_path(path: str) -> None:
    """Flush a file (or a folder's entries) to disk, so a power loss cannot leave a
    renamed-into-place result with empty files."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(tmp_dir: str, final_dir: str) -> None:
    """Move a finished temporary folder into place. An existing folder of that name is
    moved aside to ``<final>.old-<pid>`` first (and moved back if the rename fails), and is
    removed only once the new one is in place."""
    old = None
    if os.path.exists(final_dir):
        old = f"{final_dir}.old-{os.getpid()}"
        os.replace(final_dir, old)
    try:
        os.replace(tmp_dir, final_dir)
    except OSError:
        if old:
            os.replace(old, final_dir)
        raise
    fsync_path(os.path.dirname(os.path.abspath(final_dir)))
    if old:
        shutil.rmtree(old, ignore_errors=True)
