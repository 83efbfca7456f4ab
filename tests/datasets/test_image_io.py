"""Corrupt PNGs: our one-line DatasetError, and nothing from libpng on the C-level stderr."""
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from paddleseg_unet.datasets.image_io import DatasetError, read_image, read_label


def _chunks(data: bytes):
    """(offset, type) of each chunk, parsed independently of the code under test."""
    offset, out = 8, []
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        out.append((offset, data[offset + 4:offset + 8]))
        offset += 12 + length
    return out


@pytest.fixture()
def png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "good.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path, rgb


def test_valid_png_reads_as_before(png, capfd):
    path, rgb = png
    assert np.array_equal(read_image(str(path)), rgb)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("reader,what", [(read_image, "Image"), (read_label, "Label")])
def test_flipped_byte_in_idat_is_one_line_and_libpng_stays_silent(png, tmp_path, capfd,
                                                                  reader, what):
    path, _ = png
    data = bytearray(path.read_bytes())
    idat = next(o for o, kind in _chunks(bytes(data)) if kind == b"IDAT")
    data[idat + 8 + 10] ^= 0xFF  # inside the compressed data: only the CRC notices
    bad = tmp_path / "flipped.png"
    bad.write_bytes(bytes(data))
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is None
    assert "libpng error" in capfd.readouterr().err  # what a plain cv2 read prints
    with pytest.raises(DatasetError) as err:
        reader(str(bad))
    assert str(err.value) == (f"{what} is a corrupt PNG (chunk IDAT fails its CRC check): "
                              f"{bad}. Re-create or re-download the file.")
    assert capfd.readouterr().err == ""


def test_truncated_png_is_one_line_and_libpng_stays_silent(png, tmp_path, capfd):
    path, _ = png
    data = path.read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(DatasetError) as err:
        read_image(str(bad))
    assert str(err.value) == (f"Image is a truncated PNG (it ends before its IEND chunk): "
                              f"{bad}. Re-create or re-download the file.")
    assert capfd.readouterr().err == ""


def test_corrupt_palette_label_is_refused_before_pillow(tmp_path):
    index = np.random.default_rng(1).integers(0, 2, (20, 30), dtype=np.uint8)
    path = tmp_path / "label.png"
    im = Image.fromarray(index, mode="P")
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.save(path)
    assert np.array_equal(read_label(str(path)), index)
    data = bytearray(path.read_bytes())
    plte = next(o for o, kind in _chunks(bytes(data)) if kind == b"PLTE")
    data[plte + 8] ^= 0x01
    assert zlib.crc32(bytes(data[plte + 4:plte + 8 + 768])) != int.from_bytes(
        data[plte + 8 + 768:plte + 12 + 768], "big")
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"chunk PLTE fails its CRC check"):
        read_label(str(path))
