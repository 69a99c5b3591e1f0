"""A label-free training source over any folder of images, for ZeroSeg (Chen et al., ICCV 2023,
§4.1: ImageNet-1k images, labels ignored, no augmentation besides the centre crop).

Images are found recursively (ImageNet's class folders or a flat folder; suffixes in any case;
hidden files and folders skipped) and sorted by relative path, so every process and every run
sees the same order. Each image is resized so its shorter side is floor(size / crop_pct) (PIL
bicubic, as torchvision's ``Resize``), centre-cropped to ``size`` and normalised with ImageNet's
mean/std (MAE's recipe).

Unreadable images are skipped when they are sampled, not in a pre-scan: listing a 1.28 M-image
folder is cheap, decoding it all before training is not, and a header-only scan would miss
truncated files anyway. ``sample(i)`` on an unreadable image warns once, remembers it, and returns
the next readable image (deterministically, so resumed runs see the same data), with
``"skipped"`` = how many it passed over. The warning and the memory of unreadable files are per
process (DataLoader workers are separate processes); ZeroSeg logs the per-batch count as the
``skipped`` entry of its loss dict, so it reaches the training log. The teacher-cache build decodes every image once
and lists the unreadable ones in its manifest with a summary line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vocaseg.data.imageio import read_image
from vocaseg.errors import DatasetError
from vocaseg.hashing import text_sha256

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULE = "PIL bicubic, shorter side -> floor(size / crop_pct), centre crop"


def list_images(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of the images under ``root`` (recursive, sorted, no hidden entries)."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def _chw(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> a fresh uint8 tensor [3, H, W] (PIL-backed arrays are read-only)."""
    return torch.tensor(image).permute(2, 0, 1).contiguous()


def paths_sha256(paths: Sequence[str]) -> str:
    """Fingerprint of an ordered image list (to check a cache belongs to a folder)."""
    return text_sha256("\n".join(paths))


class ImageFolderSource:
    """Images of ``root`` as training samples ``{"image": float32 [3, size, size] (normalised),
    "index": int, "path": str (relative), "skipped": int}``, plus ``"teacher_image"`` (uint8
    [3, S, S], what the teacher's views are cut from) when ``teacher_crop`` is ``"student"`` (the
    student's crop, S = size) or ``"native"`` (the same region at full resolution).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int = 224,
        crop_pct: float = 1.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        teacher_crop: str | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"image folder {self.root} does not exist; pass a folder of images")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        if teacher_crop not in (None, "student", "native"):
            raise ValueError(
                f"teacher_crop must be None, 'student' or 'native', got {teacher_crop!r}"
            )
        self.paths = list_images(self.root)
        if not self.paths:
            raise DatasetError(
                f"no images under {self.root} (looked recursively for "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}); point data.root at a folder of images"
            )
        self.size, self.crop_pct = size, crop_pct
        self.resize_short = int(size / crop_pct)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.teacher_crop = teacher_crop
        self.unreadable: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def crop_record(self) -> dict[str, Any]:
        """What decides the student's crop (and so the ``student`` teacher views): stored in and
        compared against a teacher-cache manifest."""
        return {"size": self.size, "crop_pct": self.crop_pct, "resize": RESIZE_RULE}

    def load(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 [H, W, 3]; :class:`DatasetError` if it cannot be read."""
        return read_image(self.root / self.paths[index])

    def student_crop(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [size, size, 3]: shorter side to floor(size / crop_pct), centre crop."""
        height, width = image.shape[:2]
        short = min(height, width)
        new_h, new_w = (int(side * self.resize_short / short) for side in (height, width))
        resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC)
        resized = np.asarray(resized)
        top = round((new_h - self.size) / 2)
        left = round((new_w - self.size) / 2)
        return resized[top : top + self.size, left : left + self.size]

    def native_crop(self, image: np.ndarray) -> np.ndarray:
        """The region the student crop covers, at full resolution: uint8 [S, S, 3]."""
        height, width = image.shape[:2]
        side = round(min(height, width) * self.size / self.resize_short)
        top, left = round((height - side) / 2), round((width - side) / 2)
        return image[top : top + side, left : left + side]

    def teacher_input(self, index: int, crop_source: str) -> torch.Tensor:
        """uint8 [3, S, S] the teacher views of image ``index`` are cut from (raises if unreadable)."""
        image = self.load(index)
        crop = self.student_crop(image) if crop_source == "student" else self.native_crop(image)
        return _chw(crop)

    def _skip(self, index: int, error: DatasetError | None) -> None:
        path = self.paths[index]
        if path in self.unreadable:
            return
        self.unreadable.add(path)
        warnings.warn(
            f"skipping unreadable image {path} ({error}); {len(self.unreadable)} skipped so far",
            stacklevel=3,
        )

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """Training sample ``index`` (or the next readable one); ``rng`` is unused (no augmentation)."""
        for offset in range(len(self)):
            current = (index + offset) % len(self)
            if self.paths[current] in self.unreadable:
                continue
            try:
                image = self.load(current)
            except DatasetError as err:
                self._skip(current, err)
                continue
            return self._make(image, current, offset)
        raise DatasetError(f"none of the {len(self)} images under {self.root} can be read")

    def _make(self, image: np.ndarray, index: int, skipped: int) -> dict[str, Any]:
        crop = self.student_crop(image)
        tensor = _chw(crop)  # [3, size, size]
        out: dict[str, Any] = {
            "image": (tensor.float() / 255 - self.mean) / self.std,
            "index": index,
            "path": self.paths[index],
            "skipped": skipped,
        }
        if self.teacher_crop is not None:
            native = self.teacher_crop == "native"
            out["teacher_image"] = _chw(self.native_crop(image)) if native else tensor
        return out
