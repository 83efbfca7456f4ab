import os
import stat

import pytest

from paddleseg_unet.utils.io import atomic_write, atomic_write_bytes


def test_atomic_write_replaces_only_on_success_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_bytes(str(path), b"first")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path), "w", encoding="utf-8") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"first"
    assert os.listdir(path.parent) == ["out.txt"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_check_writable_folder_creates_the_folder_and_names_a_bad_one(tmp_path):
    from paddleseg_unet.utils.io import check_writable_folder

    check_writable_folder(str(tmp_path / "a" / "b" / "out.json"))
    assert (tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        check_writable_folder(str(blocker / "out.json"))
