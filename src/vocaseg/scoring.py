"""Small scoring helpers shared by methods and background protocols (below ``vocaseg.models``).

Scores are ``[B, C, H, W]`` tensors over queries or classes; none of these functions knows a method.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def max_over_queries(
    probs: Tensor, query_to_class: Sequence[int], num_classes: int | None = None
) -> Tensor:
    """[B, Q, H, W] query scores -> [B, K, H, W]: the max over each class's queries (synonyms)."""
    if num_classes is None:
        num_classes = max(query_to_class) + 1
    if len(query_to_class) == num_classes:
        return probs
    index = torch.as_tensor(list(query_to_class), device=probs.device).view(1, -1, 1, 1)
    out = probs.new_full((probs.shape[0], num_classes, *probs.shape[2:]), float("-inf"))
    return out.scatter_reduce(1, index.expand_as(probs), probs, reduce="amax")


def small_classes(
    labels: Tensor, num_classes: int, area_thd: float, background: int | None = None
) -> Tensor:
    """[B, K] bool: the classes whose area in ``labels`` [B, H, W] is non-zero and at most
    ``area_thd`` × the image's non-background area (SCLIP's VOC-21 rule, Wang et al. ECCV 2024).

    ``background`` (a class index) is never small and its area does not count.
    """
    offsets = torch.arange(labels.shape[0], device=labels.device).view(-1, 1, 1) * num_classes
    area = torch.bincount((labels + offsets).flatten(), minlength=labels.shape[0] * num_classes)
    area = area.view(labels.shape[0], num_classes)  # [B, K] pixels per class
    foreground = area.sum(1, keepdim=True)
    if background is not None:
        foreground = foreground - area[:, background : background + 1]
    small = (area <= area_thd * foreground) & (area > 0)
    if background is not None:
        small[:, background] = False
    return small


def drop_small_classes(probs: Tensor, area_thd: float, background: int | None = None) -> Tensor:
    """Zero the scores [B, K, H, W] of every class :func:`small_classes` finds in their argmax."""
    small = small_classes(probs.argmax(1), probs.shape[1], area_thd, background)
    return probs.masked_fill(small[..., None, None], 0.0)


class RunningArgmax:
    """Per-pixel best score and its class over class scores seen a chunk at a time, equal to
    ``max`` and ``argmax`` over all of them at once: a tie goes to the lowest class index."""

    def __init__(self) -> None:
        self.value: Tensor | None = None  # [B, H, W]
        self.index: Tensor | None = None  # [B, H, W] int64

    def update(self, scores: Tensor, classes: Tensor) -> None:
        """Fold in ``scores`` [B, k, H, W] of the classes ``classes`` [k] (int64, any order)."""
        value, arg = scores.max(dim=1)
        if bool((classes[1:] >= classes[:-1]).all()):  # first maximum = lowest class index
            index = classes[arg]
        else:
            ties = scores == value[:, None]
            missing = torch.iinfo(classes.dtype).max
            index = torch.where(ties, classes.view(1, -1, 1, 1), missing).amin(dim=1)
        if self.value is None or self.index is None:
            self.value, self.index = value, index
            return
        better = (value > self.value) | ((value == self.value) & (index < self.index))
        self.value = torch.where(better, value, self.value)
        self.index = torch.where(better, index, self.index)


def set_background_where(scores: Tensor, background: int, where: Tensor) -> Tensor:
    """``scores`` [B, K, H, W] with class ``background`` set to 1 + the best score at pixels
    ``where`` [B, H, W] (so the argmax picks it) and left as it is elsewhere."""
    out = scores.clone()
    top = scores.amax(dim=1) + 1.0
    out[:, background] = torch.where(where, top, scores[:, background])
    return out
