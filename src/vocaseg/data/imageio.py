"""Reading images and label maps from disk, and writing label maps atomically
(docs/datasets.md §1.4).

Images come back as uint8 ``[H, W, 3]`` RGB after EXIF orientation; grayscale, RGBA and palette
images are converted. Labels come back at their native depth and meaning: palette PNGs (VOC) as
their indices, never as colours; 16-bit PNG and TIFF as uint16; RGB PNGs (panoptic) as
``[H, W, 3]`` uint8.

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

from vocaseg.errors import ConfigError, DatasetError
from vocaseg.io import atomic_path

_UNSET = object()
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


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    limit = get_max_pixels()
    try:
        return _load(path, limit)
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except (
        Image.DecompressionBombError
    ) as err:  # past PIL's own limit: only its message has the size
        found = re.search(r"\((\d+) pixels\)", str(err))
        pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        pixels = int(found.group(1)) if found else None
        raise DatasetError(too_large_message(path, pixels, limit or pil_limit)) from None
    except IsADirectoryError:
        raise DatasetError(f"{what} {path} is a folder, not an image file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(
            f"cannot read {what} {path}: {err}; re-download or re-convert it"
        ) from None


def _load(path: str | os.PathLike, limit: int | None) -> Image.Image:
    """Open and decode ``path``; the file is closed again whenever decoding fails."""
    with warnings.catch_warnings():  # PIL warns below its hard limit; the check below decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    try:
        pixels = image.width * image.height
        if limit is not None and pixels > limit:
            raise DatasetError(too_large_message(path, pixels, limit))
        image.load()
    except BaseException:
        image.close()
        raise
    return image


def read_image(path: str | os.PathLike, exif_transpose: bool = True) -> np.ndarray:
    """An image as uint8 ``[H, W, 3]`` RGB, EXIF orientation applied unless told not to."""
    image = _open(path, "image")
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGBA" if image.mode == "P" else image.mode).convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label map at native depth: ``[H, W]`` uint8/uint16/int32, or ``[H, W, 3]`` uint8 for RGB."""
    image = _open(path, "label")
    if image.mode in ("P", "L", "RGB"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if image.mode == "I":
        return np.asarray(image, dtype=np.int32)
    raise DatasetError(
        f"label {path} has image mode {image.mode!r}; expected an index PNG/TIFF (8 or 16 bit)"
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
