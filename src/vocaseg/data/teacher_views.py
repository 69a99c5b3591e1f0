"""ZeroSeg's multi-scale teacher views (Chen et al., ICCV 2023, §3.3): the full image and every
cell of non-overlapping 2×2, 3×3 and 4×4 grids, 30 views, each resized to the teacher's input size
and CLIP-normalised, then embedded by a frozen CLIP image encoder.

Geometry: view 1 is the full image, then each grid row-major, grids ascending. Cell k of an
n-grid spans [round(k·S/n), round((k+1)·S/n)) per axis (round half up), so at S = 224 the 3×3
cuts are 0/75/149/224. Each cell is resized bicubically with antialiasing (align_corners=False)
and clamped and rounded to 8-bit levels, as CLIP's own PIL preprocessing does, then normalised
with CLIP's mean/std.

:class:`MultiScaleCropTeacher` computes the targets [B, 30, D] for a batch: the ``online`` mode
calls it inside the training step, and the cache writer (``vocaseg.data.teacher_cache``) calls the
same function, so cached and online targets agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vocaseg.clip.model import OPENAI_MEAN, OPENAI_STD

VIEW_GRIDS = (1, 2, 3, 4)
CROP_SOURCES = ("student", "native")
RESIZE_RULE = "bicubic antialias align_corners=False, clamped and rounded to uint8 levels"


def cell_edges(size: int, n: int) -> list[int]:
    """The n + 1 cut positions round(k·size/n), k = 0..n, rounding halves up (exact integers)."""
    return [(2 * k * size + n) // (2 * n) for k in range(n + 1)]


def view_boxes(
    height: int, width: int, grids: Sequence[int] = VIEW_GRIDS
) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of every view: grid by grid, each row-major."""
    boxes = []
    for n in grids:
        rows, cols = cell_edges(height, n), cell_edges(width, n)
        for i in range(n):
            for j in range(n):
                boxes.append((rows[i], rows[i + 1], cols[j], cols[j + 1]))
    return boxes


@dataclass(frozen=True)
class ViewSpec:
    """What defines the teacher views: the grids, the teacher input size, where cells are cut from
    (``student``: the student's centre crop; ``native``: the same region of the full-resolution
    image), and CLIP's normalisation (0-1 pixel scale)."""

    grids: tuple[int, ...] = VIEW_GRIDS
    size: int = 224
    crop_source: str = "student"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        if self.crop_source not in CROP_SOURCES:
            raise ValueError(f"crop_source must be one of {CROP_SOURCES}, got {self.crop_source!r}")
        object.__setattr__(self, "grids", tuple(int(n) for n in self.grids))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def num_views(self) -> int:
        return sum(n * n for n in self.grids)

    def record(self) -> dict[str, Any]:
        """JSON-ready description, stored in (and compared against) a cache manifest."""
        return {
            "grids": list(self.grids),
            "count": self.num_views,
            "size": self.size,
            "crop_source": self.crop_source,
            "resize": RESIZE_RULE,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def make_views(images: Tensor, spec: ViewSpec) -> Tensor:
    """8-bit ``images`` [B, 3, H, W] (uint8 or float on the 0-255 scale) -> normalised views
    [B, V, 3, size, size] in :func:`view_boxes` order."""
    x = images.float()
    mean = x.new_tensor(spec.mean).view(1, 3, 1, 1) * 255
    std = x.new_tensor(spec.std).view(1, 3, 1, 1) * 255
    views = []
    for top, bottom, left, right in view_boxes(x.shape[-2], x.shape[-1], spec.grids):
        cell = x[:, :, top:bottom, left:right]
        if cell.shape[-2:] != (spec.size, spec.size):
            cell = F.interpolate(
                cell,
                size=(spec.size, spec.size),
                mode="bicubic",
                align_corners=False,
                antialias=True,
            )
            cell = cell.clamp(0, 255).round()
        views.append((cell - mean) / std)
    return torch.stack(views, dim=1)  # [B, V, 3, size, size]


class MultiScaleCropTeacher:
    """Teacher targets for a batch: views of each image through ``teacher`` ([N, 3, size, size]
    -> [N, D], e.g. a frozen ``CLIP.encode_image``), ``chunk`` views per call.

    ``name`` and ``sha256`` identify the teacher weights in a cache manifest.
    """

    def __init__(
        self,
        teacher: Callable[[Tensor], Tensor],
        spec: ViewSpec,
        name: str,
        sha256: str,
        chunk: int = 256,
    ) -> None:
        self.teacher, self.spec = teacher, spec
        self.name, self.sha256 = name, sha256
        self.chunk = chunk

    @torch.no_grad()
    def __call__(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        """8-bit images — a batch [B, 3, H, W], or a list of [3, H_i, W_i] (``native`` crops
        differ in size) — -> float32 targets [B, V, D]."""
        if isinstance(images, Tensor):
            views = make_views(images, self.spec)  # [B, V, 3, s, s]
        else:
            views = torch.cat([make_views(image[None], self.spec) for image in images])
        batch, count = views.shape[:2]
        flat = views.flatten(0, 1)  # [B·V, 3, s, s]
        out = torch.cat(
            [
                self.teacher(flat[i : i + self.chunk]).float()
                for i in range(0, len(flat), self.chunk)
            ]
        )
        return out.view(batch, count, -1)  # [B, V, D]
