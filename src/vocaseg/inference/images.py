"""Image input for inference: files, PIL images, numpy arrays and tensors -> RGB uint8 arrays,
and the expansion of files and folders into the inputs to segment.

Files are read by the package's one image reader (:func:`vocaseg.data.imageio.open_rgb`): EXIF
orientation, every PIL mode to 8-bit RGB, and a pixel limit against decompression bombs. A missing,
empty, unreadable, truncated or too large file is an :class:`vocaseg.errors.ImageError` naming the
file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from vocaseg.constants import IMAGE_SUFFIXES
from vocaseg.data.imageio import open_rgb, to_rgb
from vocaseg.errors import ImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an upright 8-bit RGB PIL image (fully decoded); any failure, a file
    over the pixel limit (``vocaseg.data.imageio.set_max_pixels``) included, is an
    :class:`ImageError` naming the file (:func:`vocaseg.data.imageio.open_rgb`)."""
    return open_rgb(path, ImageError)


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


def find_images(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Expand files and folders into the image files to segment (see :func:`find_inputs`)."""
    return [path for path, _ in find_inputs(inputs, recursive=recursive)]


def find_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    recursive: bool = False,
    video_suffixes: Sequence[str] = (),
    exclude: str | os.PathLike | None = None,
) -> list[tuple[Path, Path]]:
    """The files to segment, each with its path relative to what was named: a named file's name,
    or a found file's path below the named folder (``sub/x.jpg``).

    A folder contributes its files with an image suffix (or one of ``video_suffixes``), sorted;
    with ``recursive``, those of its sub-folders too (links to folders are not followed; hidden
    files and folders and ``exclude``, e.g. the output folder, are skipped). A named file is kept
    whatever its suffix (it fails later, with its name, if it cannot be read). A named path that
    does not exist, or a folder with nothing to segment, is an :class:`ImageError`; for a folder
    whose files lie only in sub-folders it says so and names the fix.
    """
    suffixes = tuple(IMAGE_SUFFIXES) + tuple(s for s in video_suffixes if s not in IMAGE_SUFFIXES)
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = _folder_files(path, suffixes, recursive, skip)
            if not files:
                raise ImageError(_empty_folder_message(path, suffixes, recursive, skip))
            found.extend((file, file.relative_to(path)) for file in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            video = path.suffix.lower() in suffixes and path.suffix.lower() not in IMAGE_SUFFIXES
            raise ImageError(f"{'video' if video else 'image'} not found: {path} (check the path)")
    return found


def _folder_files(
    folder: Path, suffixes: Sequence[str], recursive: bool, skip: Path | None
) -> list[Path]:
    """Files of ``folder`` (and, if ``recursive``, its sub-folders) with one of ``suffixes``."""
    files = []
    for top, dirs, names in os.walk(folder):
        here = Path(top)
        dirs[:] = [
            d for d in dirs if recursive and not d.startswith(".") and (here / d).resolve() != skip
        ]  # pruned in place: os.walk descends only into these (never through links)
        files.extend(
            here / name
            for name in names
            if not name.startswith(".")
            and Path(name).suffix.lower() in suffixes
            and (here / name).is_file()
        )
    return sorted(files, key=lambda file: file.relative_to(folder).parts)


def _empty_folder_message(
    folder: Path, suffixes: Sequence[str], recursive: bool, skip: Path | None
) -> str:
    kinds = "image or video" if len(suffixes) > len(IMAGE_SUFFIXES) else "image"
    listed = ", ".join(suffixes)
    if recursive:
        return f"folder {folder} and its sub-folders hold no {kinds} files ({listed})"
    nested = len(_folder_files(folder, suffixes, True, skip))
    if nested:
        return (
            f"folder {folder} holds no {kinds} files itself, but its sub-folders hold {nested}; "
            "pass --recursive (recursive=True in Python) to include them"
        )
    return f"folder {folder} holds no {kinds} files ({listed})"
