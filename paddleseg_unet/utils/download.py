"""Cached, resumable, process-safe downloads and safe archive extraction.

Stdlib + tqdm only. Layout of the cache::

    $PADDLESEG_UNET_HOME (default ~/.paddleseg_unet)/<subdir>/<filename>
    <filename>.part   partial download, resumed with an HTTP Range request
    <filename>.lock   lock file serialising processes that fetch the same file: an fcntl
                      lock where fcntl exists (POSIX), else (Windows) the file itself is the
                      lock, created exclusively and kept fresh by its holder (see _file_lock)
"""
import contextlib
import http.client
import logging
import os
import shutil
import socket
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import IO, Iterator, Optional, Tuple

from tqdm import tqdm

__all__ = ["DownloadError", "cache_root", "cached_download", "extract_archive"]

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_USER_AGENT = "paddleseg_unet-downloader"
# Exclusive-create lock (no fcntl): the holder touches the file every _LOCK_HEARTBEAT s; one
# untouched for _LOCK_STALE s belongs to a process that died and may be removed.
_LOCK_HEARTBEAT = 5.0
_LOCK_STALE = 60.0
_LOCK_POLL = 0.2


class DownloadError(Exception):
    """A download or extraction failed; the message tells the user what to do."""


class _Retryable(Exception):
    """Transient failure (connection problem, short read, 5xx): worth another attempt."""


class _Restart(Exception):
    """The partial file cannot be resumed; drop it and fetch from byte 0 right away."""


def cache_root() -> str:
    """Root of the local cache: ``$PADDLESEG_UNET_HOME`` or ``~/.paddleseg_unet``."""
    home = os.environ.get("PADDLESEG_UNET_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    return os.path.join(os.path.expanduser("~"), ".paddleseg_unet")


def _filename_from_url(url: str) -> str:
    path = urllib.parse.urlparse(url).path
    name = urllib.parse.unquote(os.path.basename(path))
    if not name or name in (".", ".."):
        raise DownloadError(
            f"Cannot derive a file name from the URL {url!r}; pass filename= explicitly.")
    return name


def _manual_hint(final: str) -> str:
    return ("If this machine is offline, download it elsewhere and place it at: "
            f"{final}")


def cached_download(url: str,
                    cache_dir: Optional[str] = None,
                    filename: Optional[str] = None,
                    retries: int = 3,
                    backoff: float = 1.0,
                    timeout: float = 30.0,
                    progress: bool = True,
                    subdir: str = "weights") -> str:
    """Download ``url`` once into the cache and return the local path.

    cache_dir defaults to ``cache_root()/subdir``; filename to the URL's basename.
    An existing final file is a cache hit (no network). Otherwise the file is fetched
    under an exclusive lock into ``<final>.part`` (resumed when possible) and renamed
    to its final name only when complete. Transient failures are retried ``retries``
    times (so at most ``retries + 1`` attempts) after sleeping ``backoff * 2**k`` s.
    """
    if cache_dir is None:
        cache_dir = os.path.join(cache_root(), subdir)
    if filename is None:
        filename = _filename_from_url(url)
    if os.path.basename(filename) != filename or filename in ("", ".", ".."):
        raise DownloadError(f"filename must be a plain file name, got {filename!r}.")
    final = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), filename)
    if os.path.isfile(final):
        return final

    try:
        os.makedirs(os.path.dirname(final), exist_ok=True)
    except OSError as e:
        raise _cache_dir_error(final, e) from e
    with _download_lock(final + ".lock", final):
        # The lock holder before us may have finished the file meanwhile.
        if os.path.isfile(final):
            return final
        _download_with_retries(url, final, retries, backoff, timeout, progress)
        return final


def _cache_dir_error(final: str, error: OSError) -> DownloadError:
    return DownloadError(
        f"Cannot write to the cache directory {os.path.dirname(final)} ({error}). "
        "Set PADDLESEG_UNET_HOME to a writable directory.")


@contextlib.contextmanager
def _download_lock(path: str, final: str) -> Iterator[None]:
    """Hold the lock of ``final`` (one downloader per file across processes)."""
    try:
        import fcntl  # POSIX only: imported where the lock is taken
    except ImportError:
        with _file_lock(path, final):
            yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _cache_dir_error(final, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process that is downloading %s", final)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        # Closing the descriptor releases the lock. The lock file itself stays:
        # unlinking it would let a third process lock a different inode.
        os.close(fd)


@contextlib.contextmanager
def _file_lock(path: str, final: str) -> Iterator[None]:
    """The lock where fcntl does not exist: whoever creates ``path`` (O_EXCL) holds it and
    removes it when done; a daemon thread touches it meanwhile, so a file left by a process
    that died goes stale after ``_LOCK_STALE`` s and is removed by the next waiter."""
    waiting = False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if _remove_if_stale(path):
                continue
        except OSError as e:
            raise _cache_dir_error(final, e) from e
        if not waiting:
            logger.info("Waiting for another process that is downloading %s", final)
            waiting = True
        time.sleep(_LOCK_POLL)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(_LOCK_HEARTBEAT):
            with contextlib.suppress(OSError):
                os.utime(path)

    beat = threading.Thread(target=heartbeat, name="download-lock-heartbeat", daemon=True)
    beat.start()
    try:
        yield
    finally:
        done.set()
        beat.join()
        _remove_quietly(path)


def _remove_if_stale(path: str) -> bool:
    """Remove ``path`` if nobody touched it for ``_LOCK_STALE`` s; True when it is gone."""
    try:
        seen = os.stat(path)
    except FileNotFoundError:
        return True
    if time.time() - seen.st_mtime < _LOCK_STALE:
        return False
    # Rename first: of several waiters only one gets the file, and it can check that the
    # file is still the stale one (not a lock created since the stat) before deleting it.
    grave = f"{path}.stale-{os.getpid()}-{threading.get_ident()}"
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return True  # another waiter took it; try to create ours
    except OSError:  # e.g. Windows: the holder has it open this instant; poll again
        return False
    moved = os.stat(grave)
    if (moved.st_ino, moved.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
        with contextlib.suppress(OSError):  # a live holder's fresh lock: put it back
            os.link(grave, path)
    else:
        logger.warning("Removed the stale download lock %s (untouched for %.0f s: its "
                       "process is gone)", path, time.time() - seen.st_mtime)
    _remove_quietly(grave)
    return True


def _download_with_retries(url: str, final: str, retries: int, backoff: float,
                           timeout: float, progress: bool) -> None:
    part = final + ".part"
    attempt = 0
    restarts = 0
    while True:
        try:
            _fetch_once(url, part, timeout, progress)
            break
        except _Restart:
            # Bounded so a server that keeps answering nonsense cannot loop forever.
            restarts += 1
            _remove_quietly(part)
            if restarts > retries + 1:
                raise DownloadError(
                    f"Could not download {url}: the server keeps rejecting the resume "
                    f"request. {_manual_hint(final)}") from None
        except _Retryable as e:
            if attempt >= retries:
                kept = ""
                if os.path.exists(part):
                    kept = (f" The partial file {part} is kept and the next call will "
                            "resume it.")
                raise DownloadError(
                    f"Could not download {url} ({e}) after {attempt + 1} attempt(s)."
                    f"{kept} {_manual_hint(final)}") from None
            delay = backoff * (2 ** attempt)
            attempt += 1
            logger.warning("Download of %s failed (%s); retry %d/%d in %.2f s",
                           url, e, attempt, retries, delay)
            time.sleep(delay)
    try:
        os.replace(part, final)
    except OSError as e:
        raise DownloadError(f"Cannot move {part} to {final} ({e}).") from e


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _open_response(url: str, offset: int, timeout: float, final: str):
    """urlopen with error classification; the caller must close the response."""
    headers = {"User-Agent": _USER_AGENT}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset > 0:
            raise _Restart() from None
        if e.code == 404:
            raise DownloadError(
                f"Could not download {url}: the server answered 404 Not Found, so the URL "
                "is wrong (check it in your config). If you have the file, place it at: "
                f"{final}") from None
        if e.code >= 500 or e.code in (408, 429):
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(
            f"Could not download {url}: HTTP {e.code} {e.reason}. If you have the file, "
            f"place it at: {final}") from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
            socket.timeout, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise _Retryable(f"server unreachable: {reason}") from None


def _parse_content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """'bytes START-END/TOTAL' -> (START, TOTAL); None for parts that are absent or '*'."""
    if not value or not value.strip().lower().startswith("bytes"):
        return None, None
    spec = value.strip()[5:].strip()
    span, _, total = spec.partition("/")
    start_s = span.partition("-")[0].strip()
    start = int(start_s) if start_s.isdigit() else None
    total = total.strip()
    return start, (int(total) if total.isdigit() else None)


def _content_length(response) -> Optional[int]:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _fetch_once(url: str, part: str, timeout: float, progress: bool) -> None:
    """One HTTP request: append to or restart ``part``; raise unless it is complete."""
    final = part[:-len(".part")]
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    response = _open_response(url, offset, timeout, final)
    with response:
        status = getattr(response, "status", None) or response.getcode() or 200
        if status == 206 and offset > 0:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _Restart()
            if total is None:
                length = _content_length(response)
                total = offset + length if length is not None else None
            mode = "ab"
        else:
            # 200 (server ignored the Range header or none was sent): start over.
            offset = 0
            total = _content_length(response)
            mode = "wb"
        try:
            with open(part, mode) as f:
                written = _stream(response, f, offset, total, progress,
                                  os.path.basename(final))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise DownloadError(f"Cannot write {part} ({e}).") from e
    if total is not None and written != total:
        if written > total:
            raise _Restart()
        raise _Retryable(f"short read: got {written} of {total} bytes")


def _stream(response, f: IO[bytes], offset: int, total: Optional[int],
            progress: bool, desc: str) -> int:
    """Copy the body to ``f``; return the file size reached. Bytes already
    written stay on disk when the connection breaks, so they can be resumed."""
    written = offset
    # disable=None lets tqdm switch itself off when stderr is not a terminal.
    with tqdm(total=total, initial=offset, unit="B", unit_scale=True,
              unit_divisor=1024, desc=desc, disable=True if not progress else None,
              file=sys.stderr, leave=False) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except http.client.IncompleteRead as e:
                f.write(e.partial)
                written += len(e.partial)
                raise _Retryable(
                    f"short read: connection closed after {written} bytes") from None
            except (http.client.HTTPException, ConnectionError, socket.timeout,
                    OSError) as e:
                raise _Retryable(f"connection broken: {e}") from None
            if not chunk:
                return written
            f.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))


# ---------------------------------------------------------------------------
# archives


def _unsafe_name(name: str) -> bool:
    """True for absolute names or names with a '..' component (any separator)."""
    normalized = name.replace("\\", "/")
    drive = len(normalized) > 1 and normalized[0].isalpha() and normalized[1] == ":"
    if normalized.startswith("/") or drive:
        return True
    return ".." in normalized.split("/")


def _check_inside(root: str, name: str, archive: str) -> None:
    target = os.path.realpath(os.path.join(root, name))
    if _unsafe_name(name) or not (target == root or target.startswith(root + os.sep)):
        raise DownloadError(
            f"Refusing to extract {archive}: member {name!r} would be written outside "
            "the destination (absolute path or '..'). The archive is unsafe or corrupt.")


def _check_tar_members(tar: tarfile.TarFile, root: str, archive: str) -> None:
    for member in tar.getmembers():
        _check_inside(root, member.name, archive)
        if member.issym() or member.islnk():
            # A link target is relative to the link's folder (symlink) or the root (hard).
            base = os.path.dirname(member.name) if member.issym() else ""
            link = os.path.join(base, member.linkname)
            if os.path.isabs(member.linkname):
                link = member.linkname
            _check_inside(root, link, archive)
        elif not (member.isfile() or member.isdir()):
            raise DownloadError(
                f"Refusing to extract {archive}: member {member.name!r} is a device or "
                "fifo, which a dataset archive never needs.")


def extract_archive(archive: str, dest: str) -> str:
    """Extract a zip / tar / tar.gz (any tarfile compression) into ``dest``.

    Extraction goes to ``dest.tmp-<pid>`` and is renamed to ``dest`` only when
    complete, so an existing ``dest`` is a finished extraction and is returned
    untouched. Members with absolute paths or '..' are refused before anything
    is written.
    """
    dest = os.path.abspath(os.path.expanduser(dest))
    if os.path.exists(dest):
        return dest
    if not os.path.isfile(archive):
        raise DownloadError(f"Archive not found: {archive}")
    is_zip = zipfile.is_zipfile(archive)
    if not is_zip and not tarfile.is_tarfile(archive):
        raise DownloadError(
            f"{archive} is neither a zip nor a tar archive. Delete it and download it again.")
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        root = os.path.realpath(tmp)
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _check_inside(root, name, archive)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as tf:
                _check_tar_members(tf, root, archive)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process finished the same extraction first: keep its result.
            if not os.path.isdir(dest):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except DownloadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(
            f"Could not extract {archive} into {dest} ({e}). If the archive is corrupt, "
            "delete it and download it again.") from e
    return dest
