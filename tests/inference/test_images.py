"""Image input (``vocaseg.inference.images``): tensors of every float dtype, and the one image
reader behind both ``inference.images.read_image`` (PIL, ImageError) and
``data.imageio.read_image`` (array, DatasetError): one-line errors of the caller's type, the exact
pixel limit, every PIL mode to the same 8-bit RGB, EXIF orientation."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vocaseg.data import imageio
from vocaseg.data.imageio import set_max_pixels, to_rgb
from vocaseg.errors import DatasetError, ImageError
from vocaseg.inference import images
from vocaseg.inference.images import as_rgb_array


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_tensors_read_like_float32(dtype):
    image = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = as_rgb_array(image)
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3)
    assert np.array_equal(out, as_rgb_array(image.float()))
    array = image.float().permute(1, 2, 0).numpy()  # [H, W, 3]
    assert np.array_equal(as_rgb_array(array.astype(np.float16)), as_rgb_array(image.half()))


# ---------------------------------------------------------------------------------------------
# the one image reader, through both of its doors


READERS = [
    pytest.param(images.read_image, ImageError, id="inference"),
    pytest.param(imageio.read_image, DatasetError, id="data"),
]


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture
def restore_pixel_limit(monkeypatch):
    monkeypatch.setattr(imageio, "_max_pixels", imageio._max_pixels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


@pytest.mark.parametrize(("reader", "error"), READERS)
def test_every_failure_is_one_line_of_the_callers_error_type(tmp_path, reader, error):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 7).save(good)
    cases = {
        "missing.png": ("image not found: ", "check the path"),
        "folder": ("is a folder, not an image file",),
        "zero.png": ("cannot read image", "empty file (0 bytes)"),
        "text.png": ("cannot read image", "not an image file PIL can read"),
        "cut.png": ("cannot read image", "damaged or truncated"),
        "bomb.png": ("has 400,000,000 pixels", "--max-pixels 400000000"),
    }
    (tmp_path / "folder").mkdir()
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-30])
    (tmp_path / "bomb.png").write_bytes(_png_header(20000, 20000))
    for name, fragments in cases.items():
        with pytest.raises(error) as caught:
            reader(tmp_path / name)
        message = str(caught.value)
        assert str(tmp_path / name) in message and "\n" not in message
        for fragment in fragments:
            assert fragment in message, (name, message)


@pytest.mark.parametrize(("reader", "error"), READERS)
def test_the_pixel_limit_is_exact_and_never_pils_error(
    tmp_path, reader, error, restore_pixel_limit
):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(path)
    set_max_pixels(120)
    assert np.asarray(reader(path)).shape == (10, 12, 3)
    for limit in (119, 50):  # below our limit only, and past PIL's own (2 x 50) too
        set_max_pixels(limit)
        with pytest.raises(error, match=rf"has 120 pixels, more than the limit of {limit} "):
            reader(path)


def _mode_files(folder):
    """(file, expected RGB [H, W, 3]) for the modes image files hold."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    cases = []

    def add(name, image, expected, **save):
        image.save(folder / name, **save)
        cases.append((folder / name, expected))

    add("rgb.png", Image.fromarray(rgb), rgb)
    add("l.png", Image.fromarray(gray), np.repeat(gray[..., None], 3, axis=2))
    alpha = np.dstack([rgb, gray])
    add("rgba.png", Image.fromarray(alpha), rgb)
    add("la.png", Image.fromarray(np.dstack([gray, gray]), "LA"), np.repeat(gray[..., None], 3, 2))
    bits = gray > 127
    add("1.png", Image.fromarray(bits), np.repeat((bits * 255).astype(np.uint8)[..., None], 3, 2))
    palette = Image.fromarray((gray % 4).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    add("p.png", palette, colours[gray % 4])
    add("p_transparent.png", palette, colours[gray % 4], transparency=0)
    wide = (gray.astype(np.uint16) * 257).astype(np.uint16)
    add("i16.png", Image.fromarray(wide), np.repeat(gray[..., None], 3, 2))
    add("i32.tif", Image.fromarray(gray.astype(np.int32), "I"), np.repeat(gray[..., None], 3, 2))
    unit = (gray / 255).astype(np.float32)
    add("f.tif", Image.fromarray(unit, "F"), np.repeat(gray[..., None], 3, 2))
    add(
        "cmyk.tif",
        Image.fromarray(rgb).convert("CMYK"),
        np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB")),
    )
    return cases


@pytest.mark.parametrize(("reader", "error"), READERS)
def test_every_mode_becomes_8_bit_rgb_alike_in_both_readers(tmp_path, reader, error):
    for path, expected in _mode_files(tmp_path):
        out = np.asarray(reader(path))
        assert out.dtype == np.uint8 and out.shape == expected.shape, path.name
        assert np.abs(out.astype(int) - expected).max() <= 1, path.name  # 16-bit and float rounding
        assert np.array_equal(np.asarray(images.read_image(path)), imageio.read_image(path))


def test_in_memory_modes_convert():
    for mode in ("La", "RGBa", "PA", "HSV", "LAB", "YCbCr", "RGBX", "CMYK", "I;16B"):
        out = to_rgb(Image.new(mode, (3, 2)))
        assert out.mode == "RGB" and out.size == (3, 2), mode


@pytest.mark.parametrize(("reader", "error"), READERS)
def test_exif_orientation_is_applied(tmp_path, reader, error):
    image = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert np.asarray(reader(tmp_path / "rot.jpg")).shape == (6, 4, 3)


def test_inference_reader_returns_an_rgb_pil_image(tmp_path):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "g.png")
    image = images.read_image(tmp_path / "g.png")
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (6, 4)
