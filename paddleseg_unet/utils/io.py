"""Writing files so that a crash never leaves a half-written one under the final name."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Iterator, Optional


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
