"""Image input for inference: files, PIL images, numpy arrays and tensors -> RGB uint8 arrays.

Files honour EXIF orientation; grayscale, RGBA, palette, CMYK and 16-bit images become 8-bit RGB.
A missing, unreadable or truncated file is an :class:`vocaseg.errors.ImageError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vocaseg.constants import IMAGE_SUFFIXES
from vocaseg.errors import ImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an upright 8-bit RGB PIL image (fully decoded)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path} (check the path)")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image PIL can read; pass a JPEG/PNG/... file") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise ImageError(f"{path} is damaged or truncated ({err}); re-export the image") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit and 32-bit integer images are rescaled)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        if image.mode == "I" and values.max() <= 255:
            top = 255.0
        gray = np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def as_rgb_array(item: ImageInput) -> np.ndarray:
    """Any supported input -> [H, W, 3] uint8.

    Arrays: [H, W], [H, W, 1|3|4], uint8 (0-255), uint16 (0-65535) or float
    (0-1; a float array whose maximum exceeds 1 is taken as 0-255).
    Tensors: [3|1, H, W] (channels first, as torchvision), same value ranges.
    """
    if isinstance(item, (str, os.PathLike)):
        return np.asarray(read_image(item))
    if isinstance(item, Image.Image):
        return np.asarray(to_rgb(ImageOps.exif_transpose(item)))
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] not in (1, 3, 4):
            raise ImageError(f"an image tensor must be [3, H, W], got shape {tuple(item.shape)}")
        array = item.detach().cpu()
        if array.is_floating_point():  # numpy has no bfloat16
            array = array.double()
        return _array_to_rgb(array.permute(1, 2, 0).numpy())  # [C, H, W] -> [H, W, C]
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item)
    raise ImageError(
        f"cannot read an image from {type(item).__name__}; "
        "pass a path, PIL image, [H, W, 3] array or [3, H, W] tensor"
    )


def _array_to_rgb(array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) == 0:
        raise ImageError(f"an image array must be [H, W, 3], got shape {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)  # float16 would round while scaling
        scale = 255.0 if float(array.max()) <= 1.0 else 1.0  # 0-1 floats, else already 0-255
        return np.clip(array * scale, 0.0, 255.0).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return np.clip(array, 0, 255).astype(np.uint8)
    raise ImageError(f"unsupported image array dtype {array.dtype}; use uint8 or float in [0, 1]")


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (their image files, sorted, not recursive) into a list of paths.

    A named path that does not exist is an :class:`ImageError`; a file with any suffix is kept (it
    fails later, with its name, if it is not an image).
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise ImageError(
                    f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise ImageError(f"image not found: {path} (check the path)")
    return paths
