"""Image reading limits: a decompression bomb is an unreadable sample (a DatasetError naming the
file, its size, the limit and ``--max-pixels``), never PIL's DecompressionBombError."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from layouts import png_header, rgb, save_image
from PIL import Image

from vocaseg.data.imageio import get_max_pixels, read_image, read_label, set_max_pixels
from vocaseg.errors import ConfigError, DatasetError


def test_default_limit_is_pils_hard_limit(pixel_limit):
    assert get_max_pixels() == 2 * Image.MAX_IMAGE_PIXELS == 178_956_970


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_bomb_header_is_a_one_line_dataset_error(tmp_path, reader, pixel_limit):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))
    with pytest.raises(DatasetError) as caught:
        reader(bomb)
    message = str(caught.value)
    assert message == (
        f"{bomb} has 400,000,000 pixels, more than the limit of 178,956,970 (a guard against "
        "decompression bombs); if you trust the file, allow it with --max-pixels 400000000 "
        "(vocaseg.data.imageio.set_max_pixels in Python)"
    )
    set_max_pixels(None)  # no limit: the size passes, the missing pixel data does not
    with pytest.raises(DatasetError, match=r"cannot read (image|label) .*bomb\.png"):
        reader(bomb)


def test_set_max_pixels_is_the_exact_limit(tmp_path, pixel_limit):
    save_image(tmp_path / "a.png", rgb(8, 12))  # 96 pixels
    set_max_pixels(96)
    assert read_image(tmp_path / "a.png").shape == (8, 12, 3)
    set_max_pixels(95)  # past our limit, below PIL's (2 x 95)
    with pytest.raises(DatasetError, match=r"a\.png has 96 pixels, more than the limit of 95 "):
        read_image(tmp_path / "a.png")
    set_max_pixels(40)  # past PIL's own limit too (2 x 40): same message
    with pytest.raises(DatasetError, match=r"has 96 pixels, more than the limit of 40 .*--max-pix"):
        read_image(tmp_path / "a.png")
    assert get_max_pixels() == 40 and Image.MAX_IMAGE_PIXELS == 40


@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_invalid_limits_are_refused(value, pixel_limit):
    with pytest.raises(ConfigError, match=r"--max-pixels\) must be a positive whole number"):
        set_max_pixels(value)


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(DatasetError, match="is a folder, not an image file"):
        read_image(tmp_path)


def _handles_on(path) -> int:
    fds = Path("/proc/self/fd")
    target = str(Path(path).resolve())
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd) == target
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("reader", [read_image, read_label])
def test_failed_decodes_close_the_file(tmp_path, reader, pixel_limit):
    whole = tmp_path / "whole.png"
    Image.new("L", (64, 64), 7).save(whole)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[:-40])  # header fine, pixel data cut
    big = tmp_path / "big.png"
    big.write_bytes(png_header(5000, 5000))
    set_max_pixels(10_000_000)
    kept = []  # the errors stay alive (their tracebacks too), as a caller logging them keeps them
    for path in (truncated, big):
        for _ in range(3):
            try:
                reader(path)
            except DatasetError as err:
                kept.append(err)
        assert len(kept) % 3 == 0 and _handles_on(path) == 0, path.name
