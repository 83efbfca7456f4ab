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


def test_check_writable_dir_creates_the_folder_and_leaves_nothing(tmp_path):
    from paddleseg_unet.utils.io import OutputPathError, check_writable_dir, check_writable_file

    target = tmp_path / "a" / "b"
    check_writable_dir(str(target), "--save_dir")
    assert target.is_dir() and list(target.iterdir()) == []
    check_writable_file(str(tmp_path / "new" / "m.json"), "--save_json")
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=r"cannot be written \(.*file is a file"):
        check_writable_dir(str(blocker / "sub" / "deeper"), "--save_dir")
    assert blocker.read_text() == "x"
