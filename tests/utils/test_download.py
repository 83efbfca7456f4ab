"""Tests for paddleseg_unet.utils.download against an in-process HTTP server."""
import io
import multiprocessing
import os
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paddleseg_unet.utils import download as dl
from paddleseg_unet.utils.download import (DownloadError, cache_root, cached_download,
                                           extract_archive)

# Deterministic, non-repeating-ish payload so misplaced bytes are detected.
PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(200_000))


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` from memory; behaviour switches live on the server."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests += 1
            srv.range_headers.append(self.headers.get("Range"))
            fail = srv.fail_first > 0
            if fail:
                srv.fail_first -= 1
            truncate = srv.truncate_to is not None and srv.truncate_times != 0
            if truncate and srv.truncate_times is not None:
                srv.truncate_times -= 1
        srv.first_request.set()
        if fail:
            self.send_error(500, "Injected failure")
            return
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        rng = self.headers.get("Range")
        start = 0
        if rng and srv.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
            with srv.lock:
                srv.full_downloads += 1
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if truncate:
            chunk = chunk[:srv.truncate_to]
        if srv.hold is not None:
            # Send a little, then wait, so a concurrent client overlaps with us.
            self.wfile.write(chunk[:1000])
            self.wfile.flush()
            srv.hold.wait(20)
            chunk = chunk[1000:]
        self.wfile.write(chunk)
        self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.files = {"/w/model.pdparams": PAYLOAD}
        self.requests = 0
        self.full_downloads = 0
        self.range_headers = []
        self.fail_first = 0
        self.truncate_to = None
        self.truncate_times = None  # None = every response
        self.ranges = True
        self.hold = None
        self.first_request = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def url(self, path="/w/model.pdparams"):
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def stop(self):
        if self.hold is not None:
            self.hold.set()
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    # Never let a test reach the real ~/.paddleseg_unet.
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(tmp_path / "home"))


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.stop()


@pytest.fixture
def no_sleep(monkeypatch):
    delays = []
    monkeypatch.setattr(dl.time, "sleep", delays.append)
    return delays


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_full_download(server, tmp_path):
    path = cached_download(server.url(), cache_dir=str(tmp_path / "c"), progress=False)
    assert path == str(tmp_path / "c" / "model.pdparams")
    assert _read(path) == PAYLOAD
    assert not os.path.exists(path + ".part")
    assert server.requests == 1 and server.range_headers == [None]


def test_cache_hit_needs_no_network(server, tmp_path, monkeypatch):
    url = server.url()
    first = cached_download(url, cache_dir=str(tmp_path), progress=False)
    server.stop()

    def _no_network(*args, **kwargs):
        raise AssertionError("network used on a cache hit")

    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert cached_download(url, cache_dir=str(tmp_path), progress=False) == first
    assert _read(first) == PAYLOAD


def test_explicit_filename(server, tmp_path):
    path = cached_download(server.url(), cache_dir=str(tmp_path), filename="x.bin",
                           progress=False)
    assert os.path.basename(path) == "x.bin" and _read(path) == PAYLOAD
    with pytest.raises(DownloadError, match="plain file name"):
        cached_download(server.url(), cache_dir=str(tmp_path), filename="../x.bin")


def test_resume_partial_file(server, tmp_path):
    final = tmp_path / "model.pdparams"
    with open(str(final) + ".part", "wb") as f:
        f.write(PAYLOAD[:12_345])
    # progress=True runs the tqdm path (tqdm disables itself off a terminal).
    path = cached_download(server.url(), cache_dir=str(tmp_path), progress=True)
    assert server.range_headers == ["bytes=12345-"]
    assert server.full_downloads == 0
    assert _read(path) == PAYLOAD
    assert not os.path.exists(path + ".part")


def test_resume_refused_restarts(server, tmp_path):
    server.ranges = False
    final = tmp_path / "model.pdparams"
    with open(str(final) + ".part", "wb") as f:
        f.write(b"x" * 5000)  # garbage that must not survive a 200 answer
    path = cached_download(server.url(), cache_dir=str(tmp_path), progress=False)
    assert server.range_headers == ["bytes=5000-"] and server.full_downloads == 1
    assert _read(path) == PAYLOAD


def test_range_not_satisfiable_restarts(server, tmp_path):
    final = tmp_path / "model.pdparams"
    with open(str(final) + ".part", "wb") as f:
        f.write(b"y" * (len(PAYLOAD) + 10))  # longer than the remote file -> 416
    path = cached_download(server.url(), cache_dir=str(tmp_path), progress=False)
    assert server.range_headers == [f"bytes={len(PAYLOAD) + 10}-", None]
    assert _read(path) == PAYLOAD


def test_persistent_truncation_keeps_part(server, tmp_path, no_sleep):
    server.truncate_to = 30_000
    with pytest.raises(DownloadError) as info:
        cached_download(server.url(), cache_dir=str(tmp_path), retries=1, backoff=0.01,
                        progress=False)
    final = tmp_path / "model.pdparams"
    assert not final.exists()
    part = _read(str(final) + ".part")
    # Attempt 1 got 30000 bytes, attempt 2 resumed and got 30000 more.
    assert part == PAYLOAD[:60_000]
    assert server.range_headers == [None, "bytes=30000-"]
    msg = str(info.value)
    assert "short read" in msg and str(final) in msg


def test_truncation_then_resume_succeeds(server, tmp_path, no_sleep):
    server.truncate_to = 50_000
    server.truncate_times = 1
    path = cached_download(server.url(), cache_dir=str(tmp_path), retries=2, backoff=0.01,
                           progress=False)
    assert _read(path) == PAYLOAD
    assert server.range_headers == [None, "bytes=50000-"]
    assert no_sleep == [0.01]


def test_retries_with_exponential_backoff(server, tmp_path, no_sleep):
    server.fail_first = 2
    path = cached_download(server.url(), cache_dir=str(tmp_path), retries=3, backoff=0.01,
                           progress=False)
    assert _read(path) == PAYLOAD
    assert server.requests == 3
    assert no_sleep == pytest.approx([0.01, 0.02])


def test_retries_exhausted_on_500(server, tmp_path, no_sleep):
    server.fail_first = 10
    with pytest.raises(DownloadError, match="HTTP 500"):
        cached_download(server.url(), cache_dir=str(tmp_path), retries=2, backoff=0.01,
                        progress=False)
    assert server.requests == 3
    assert no_sleep == pytest.approx([0.01, 0.02])
    assert not (tmp_path / "model.pdparams").exists()


def test_real_backoff_sleeps(server, tmp_path):
    server.fail_first = 2
    t0 = time.monotonic()
    cached_download(server.url(), cache_dir=str(tmp_path), retries=2, backoff=0.05,
                    progress=False)
    assert time.monotonic() - t0 >= 0.05 + 0.1 - 0.01


def test_404_is_final(server, tmp_path, no_sleep):
    url = server.url("/w/missing.pdparams")
    with pytest.raises(DownloadError) as info:
        cached_download(url, cache_dir=str(tmp_path), retries=3, progress=False)
    msg = str(info.value)
    assert "404" in msg and "URL is wrong" in msg and url in msg
    assert str(tmp_path / "missing.pdparams") in msg
    assert server.requests == 1 and no_sleep == []


def test_server_down_gives_offline_message(tmp_path, monkeypatch):
    srv = _Server()
    url = srv.url()
    srv.stop()  # port is closed now: connection refused
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(tmp_path / "myhome"))
    with pytest.raises(DownloadError) as info:
        cached_download(url, retries=1, backoff=0.01, timeout=2, progress=False)
    msg = str(info.value)
    expected = os.path.join(str(tmp_path / "myhome"), "weights", "model.pdparams")
    assert url in msg
    assert f"place it at: {expected}" in msg
    assert "offline" in msg and "2 attempt" in msg


def test_home_override(server, tmp_path, monkeypatch):
    home = tmp_path / "custom"
    monkeypatch.setenv("PADDLESEG_UNET_HOME", str(home))
    assert cache_root() == str(home)
    path = cached_download(server.url(), progress=False)
    assert path == str(home / "weights" / "model.pdparams")
    other = cached_download(server.url(), subdir="datasets", progress=False)
    assert other == str(home / "datasets" / "model.pdparams")
    assert _read(other) == PAYLOAD


def test_default_root_is_home_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("PADDLESEG_UNET_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == str(tmp_path / ".paddleseg_unet")


def test_two_processes_download_once(server, tmp_path):
    server.hold = threading.Event()
    ctx = multiprocessing.get_context("spawn")
    kwargs = dict(url=server.url(), cache_dir=str(tmp_path), retries=0, timeout=20,
                  progress=False)
    procs = [ctx.Process(target=cached_download, kwargs=kwargs) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        assert server.first_request.wait(20), "no process reached the server"
        # Give the other process time to start and block on the lock.
        time.sleep(1.5)
        server.hold.set()
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert server.full_downloads == 1 and server.requests == 1
    assert _read(str(tmp_path / "model.pdparams")) == PAYLOAD
    assert not os.path.exists(str(tmp_path / "model.pdparams.part"))


# --------------------------------------------------------------------------- archives

_TREE = {"data/a.txt": b"alpha", "data/sub/b.bin": bytes(range(256)) * 3}


def _make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _make_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _assert_tree(dest):
    for name, data in _TREE.items():
        assert _read(os.path.join(dest, name)) == data
    leftovers = [n for n in os.listdir(os.path.dirname(dest)) if ".tmp-" in n]
    assert leftovers == []


def test_extract_zip(tmp_path):
    _make_zip(tmp_path / "a.zip", _TREE)
    dest = str(tmp_path / "out")
    assert extract_archive(str(tmp_path / "a.zip"), dest) == dest
    _assert_tree(dest)


@pytest.mark.parametrize("mode,ext", [("w:gz", "tar.gz"), ("w", "tar")])
def test_extract_tar(tmp_path, mode, ext):
    archive = tmp_path / f"a.{ext}"
    _make_tar(archive, _TREE, mode)
    dest = str(tmp_path / "out")
    assert extract_archive(str(archive), dest) == dest
    _assert_tree(dest)


def test_extract_existing_dest_untouched(tmp_path):
    _make_zip(tmp_path / "a.zip", _TREE)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_bytes(b"k")
    assert extract_archive(str(tmp_path / "a.zip"), str(dest)) == str(dest)
    assert os.listdir(dest) == ["keep.txt"]


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("bad", ["../evil.txt", "data/../../evil.txt", "/tmp/evil_abs.txt"])
def test_extract_refuses_traversal(tmp_path, kind, bad):
    work = tmp_path / "w"
    work.mkdir()
    archive = work / f"bad.{kind}"
    members = {"ok.txt": b"fine", bad: b"evil"}
    (_make_zip if kind == "zip" else _make_tar)(archive, members)
    dest = work / "out"
    with pytest.raises(DownloadError, match="outside the destination"):
        extract_archive(str(archive), str(dest))
    assert not dest.exists()
    assert sorted(os.listdir(work)) == [archive.name]  # no tmp dir, no evil file
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_escaping_symlink(tmp_path):
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("data/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../outside"
        tf.addfile(info)
    with pytest.raises(DownloadError, match="outside the destination"):
        extract_archive(str(archive), str(tmp_path / "out"))


def test_extract_rejects_non_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(DownloadError, match="neither a zip nor a tar"):
        extract_archive(str(junk), str(tmp_path / "out"))


# --------------------------------------------------------------------------- without fcntl
# Windows has no fcntl: the lock is then the lock file itself (exclusive create).

def test_every_module_imports_and_downloads_without_fcntl(server, tmp_path):
    """fcntl made unavailable before anything is imported: every module and tool imports,
    and a download takes the exclusive-create lock (removed afterwards, unlike fcntl's)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        from test_imports import import_all_script, run_python
    finally:
        sys.path.pop(0)
    cache = tmp_path / "c"
    script = import_all_script("sys.modules['fcntl'] = None") + (
        "\nfrom paddleseg_unet.utils.download import cached_download\n"
        f"print(cached_download({server.url()!r}, cache_dir={str(cache)!r}, progress=False))\n")
    proc = run_python(script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = proc.stdout.strip().splitlines()[-1]
    assert path == str(cache / "model.pdparams") and _read(path) == PAYLOAD
    assert sorted(os.listdir(cache)) == ["model.pdparams"]  # no lock file left behind
    assert server.requests == 1


@pytest.fixture
def no_fcntl(monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setattr(dl, "_LOCK_POLL", 0.02)


def test_lock_file_serialises_two_downloaders(server, tmp_path, no_fcntl):
    server.hold = threading.Event()
    results, errors = [], []

    def fetch():
        try:
            results.append(cached_download(server.url(), cache_dir=str(tmp_path), retries=0,
                                           timeout=20, progress=False))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    assert server.first_request.wait(20)
    time.sleep(0.5)  # the second one is now polling the lock file
    assert os.path.exists(tmp_path / "model.pdparams.lock")
    server.hold.set()
    for t in threads:
        t.join(30)
    assert not errors and results == [str(tmp_path / "model.pdparams")] * 2
    assert server.requests == 1 and server.full_downloads == 1
    assert _read(results[0]) == PAYLOAD
    assert not os.path.exists(tmp_path / "model.pdparams.lock")


def test_lock_file_of_a_dead_process_is_removed(server, tmp_path, no_fcntl):
    lock = tmp_path / "model.pdparams.lock"
    lock.write_text("12345\n")
    old = time.time() - dl._LOCK_STALE - 5
    os.utime(lock, (old, old))
    path = cached_download(server.url(), cache_dir=str(tmp_path), progress=False)
    assert _read(path) == PAYLOAD
    assert sorted(os.listdir(tmp_path)) == ["model.pdparams"]


def test_fresh_lock_file_is_waited_for(server, tmp_path, no_fcntl, monkeypatch):
    """A live holder (its lock recently touched) is not broken: the waiter waits, and once
    the holder's file appears it is used without a download."""
    lock = tmp_path / "model.pdparams.lock"
    lock.write_text("12345\n")

    def holder_finishes():
        time.sleep(0.5)
        (tmp_path / "model.pdparams").write_bytes(b"done by the holder")
        lock.unlink()

    t = threading.Thread(target=holder_finishes)
    t.start()
    path = cached_download(server.url(), cache_dir=str(tmp_path), progress=False)
    t.join()
    assert _read(path) == b"done by the holder" and server.requests == 0


def test_lock_file_is_kept_fresh_while_held(tmp_path, no_fcntl, monkeypatch):
    monkeypatch.setattr(dl, "_LOCK_HEARTBEAT", 0.05)
    lock = str(tmp_path / "x.lock")
    with dl._download_lock(lock, str(tmp_path / "x")):
        old = time.time() - 1000
        os.utime(lock, (old, old))
        time.sleep(0.3)
        assert time.time() - os.stat(lock).st_mtime < 5
    assert not os.path.exists(lock)
