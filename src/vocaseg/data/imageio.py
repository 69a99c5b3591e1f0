"""Reading images and label maps from disk, and writing label maps atomically
(docs/datasets.md §1.4).

Images come back as uint8 ``[H, W, 3]`` RGB after EXIF orientation; every PIL mode is converted
(grayscale, RGBA, palette, CMYK, 16-bit and float). :func:`open_rgb` is the one image reader of the
package: the data layer (:func:`read_image`, :class:`DatasetError`) and inference
(``vocaseg.inference.images.read_image``, ``ImageError``) both call it, each with its error type.
Labels come back at their native depth and meaning: palette PNGs (VOC) as their indices, never as
colours; 16-bit PNG and TIFF as uint16; RGB PNGs (panoptic) as ``[H, W, 3]`` uint8.

Very large images are refused before their pixels are decoded (a guard against decompression
bombs: a small file that claims, say, 20000x20000 pixels). The limit defaults to PIL's hard limit
(``2 * PIL.Image.MAX_IMAGE_PIXELS``, 178,956,970 pixels) and is changed for the whole process with
:func:`set_max_pixels` (the ``--max-pixels`` option).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vocaseg.errors import ConfigError, DatasetError, UserError
from vocaseg.io import atomic_path

_UNSET = object()
_FIX = "re-export, re-download or re-copy it"
_max_pixels: int | object | None = _UNSET  # PIL's own limit until set_max_pixels runs


def set_max_pixels(pixels: int | None) -> None:
    """Largest image (width x height) the readers open; ``None`` removes the limit.

    Process-wide: PIL offers only a global limit, so this also sets ``PIL.Image.MAX_IMAGE_PIXELS``
    (PIL warns past it and refuses past twice it; the readers here refuse past ``pixels``).
    """
    global _max_pixels
    if pixels is not None and (isinstance(pixels, bool) or int(pixels) != pixels or pixels < 1):
        raise ConfigError(
            f"the pixel limit (--max-pixels) must be a positive whole number, got {pixels!r}"
        )
    _max_pixels = None if pixels is None else int(pixels)
    Image.MAX_IMAGE_PIXELS = _max_pixels


def get_max_pixels() -> int | None:
    """The pixel limit in force: :func:`set_max_pixels`'s value, else PIL's hard limit."""
    if _max_pixels is not _UNSET:
        return _max_pixels  # type: ignore[return-value]
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


def too_large_message(path: str | os.PathLike, pixels: int | None, limit: int) -> str:
    """One line naming the file, its pixel count, the limit and the fix (``--max-pixels N``)."""
    size = f"{pixels:,} pixels" if pixels else "more pixels than that"
    return (
        f"{path} has {size}, more than the limit of {limit:,} (a guard against decompression "
        f"bombs); if you trust the file, allow it with --max-pixels {pixels or 2 * limit} "
        "(vocaseg.data.imageio.set_max_pixels in Python)"
    )


def open_image(
    path: str | os.PathLike, what: str = "image", error: type[UserError] = DatasetError
) -> Image.Image:
    """Open and fully decode ``path`` as PIL stores it (no orientation or mode change).

    Every way a file can fail to be an image is one ``error`` (a :class:`UserError` subclass; the
    data layer's :class:`DatasetError`, inference's ``ImageError``) naming ``what`` and the file:
    missing, a folder, empty, not an image, larger than :func:`get_max_pixels`, truncated or
    corrupt. The file is closed again whenever decoding fails.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not an image file; pass a file inside it")
    try:
        if path.stat().st_size == 0:
            raise error(f"cannot read {what} {path}: it is an empty file (0 bytes); {_FIX}")
        return _load(path, get_max_pixels(), error)
    except UserError:  # too large, empty: already one line (and a ValueError, caught below)
        raise
    except FileNotFoundError:
        raise error(f"{what} not found: {path} (check the path)") from None
    except Image.DecompressionBombError as err:  # past PIL's own limit: only its text has the size
        raise error(_bomb_message(path, err)) from None
    except UnidentifiedImageError:
        raise error(
            f"cannot read {what} {path}: not an image file PIL can read; pass a JPEG, PNG, WebP, "
            "TIFF, BMP or GIF file"
        ) from None
    except PermissionError:
        raise error(
            f"cannot read {what} {path}: permission denied; check its permissions"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt data
        raise error(f"cannot read {what} {path}: damaged or truncated ({err}); {_FIX}") from None


def _load(path: Path, limit: int | None, error: type[UserError]) -> Image.Image:
    """Open and decode ``path``, refusing more than ``limit`` pixels before decoding them."""
    with warnings.catch_warnings():  # PIL warns below its hard limit; the check below decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    try:
        pixels = image.width * image.height
        if limit is not None and pixels > limit:
            raise error(too_large_message(path, pixels, limit))
        image.load()
    except BaseException:
        image.close()
        raise
    return image


def _bomb_message(path: Path, err: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = int(found.group(1)) if found else None
    limit = get_max_pixels() or 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return too_large_message(path, pixels, limit)


def open_rgb(
    path: str | os.PathLike, error: type[UserError] = DatasetError, exif_transpose: bool = True
) -> Image.Image:
    """An image file as an 8-bit RGB PIL image, upright (EXIF orientation applied unless told
    not to); any PIL mode is converted (:func:`to_rgb`). Errors as :func:`open_image`."""
    image = open_image(path, "image", error)
    try:
        upright = ImageOps.exif_transpose(image) if exif_transpose else image
        return to_rgb(upright)
    except (OSError, SyntaxError, ValueError) as err:  # unreadable EXIF or pixel data
        raise error(f"cannot read image {path}: damaged or truncated ({err}); {_FIX}") from None
    finally:
        image.close()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB (a new image).

    16-bit images are scaled from 0-65535; 32-bit integer images from 0-255 when their values fit,
    else 0-65535 when those fit, else their maximum; float images from 0-1 when they fit, else
    likewise. Transparency is dropped (palette transparency included) without compositing.
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else _value_range(values, image.mode)
        gray = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode in ("La", "RGBa"):  # premultiplied alpha: PIL converts only from straight
        image = image.convert(image.mode.upper())
    return image.convert("RGB")


def _value_range(values: np.ndarray, mode: str) -> float:
    """The top of the range an "I" or "F" image's values were stored in."""
    peak = float(values.max()) if values.size else 0.0
    for top in (1.0, 255.0, 65535.0) if mode == "F" else (255.0, 65535.0):
        if peak <= top:
            return top
    return peak


def read_image(path: str | os.PathLike, exif_transpose: bool = True) -> np.ndarray:
    """An image as uint8 ``[H, W, 3]`` RGB, EXIF orientation applied unless told not to."""
    return np.asarray(open_rgb(path, DatasetError, exif_transpose), dtype=np.uint8)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label map at native depth: ``[H, W]`` uint8/uint16/int32, or ``[H, W, 3]`` uint8 for RGB."""
    with open_image(path, "label") as image:
        if image.mode in ("P", "L", "RGB"):
            return np.asarray(image, dtype=np.uint8)
        if image.mode.startswith("I;16"):
            return np.asarray(image).astype(np.uint16)
        if image.mode == "I":
            return np.asarray(image, dtype=np.int32)
        mode = image.mode
    raise DatasetError(
        f"label {path} has image mode {mode!r}; expected an index PNG/TIFF (8 or 16 bit)"
    )


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a label map atomically: uint8 -> 8-bit PNG, uint16 -> 16-bit PNG or TIFF by suffix."""
    path = Path(path)
    if label.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"label dtype must be uint8 or uint16, got {label.dtype}")
    image = Image.fromarray(label)
    fmt = "TIFF" if path.suffix.lower() in (".tif", ".tiff") else "PNG"
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def write_image(path: str | os.PathLike, image: np.ndarray | Image.Image) -> None:
    """Write an RGB image atomically; the format follows the suffix (JPEG at PIL's default quality)."""
    path = Path(path)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
