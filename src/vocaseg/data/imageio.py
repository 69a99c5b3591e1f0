"""Reading images and label maps from disk, and writing label maps atomically (datasets spec §1).

Images come back as uint8 ``[H, W, 3]`` RGB after EXIF orientation; grayscale, RGBA and palette
images are converted. Labels come back at their native depth and meaning: palette PNGs (VOC) as
their indices, never as colours; 16-bit PNG and TIFF as uint16; RGB PNGs (panoptic) as
``[H, W, 3]`` uint8.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vocaseg.errors import DatasetError
from vocaseg.io import atomic_path


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(
            f"cannot read {what} {path}: {err}; re-download or re-convert it"
        ) from None
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
