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


def drop_small_classes(probs: Tensor, area_thd: float, background: int | None = None) -> Tensor:
    """Zero the scores [B, K, H, W] of every class whose predicted area is at most ``area_thd`` ×
    the image's predicted non-background area (SCLIP's VOC-21 rule, Wang et al. ECCV 2024).

    ``background`` (a class index) is never dropped and its area does not count.
    """
    labels = probs.argmax(1)
    classes = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1)
    area = (labels[:, None] == classes).flatten(2).sum(-1)  # [B, K]
    foreground = area.sum(1, keepdim=True)
    if background is not None:
        foreground = foreground - area[:, background : background + 1]
    small = (area <= area_thd * foreground) & (area > 0)
    if background is not None:
        small[:, background] = False
    return probs.masked_fill(small[..., None, None], 0.0)


def set_background_where(scores: Tensor, background: int, where: Tensor) -> Tensor:
    """``scores`` [B, K, H, W] with class ``background`` set to 1 + the best score at pixels
    ``where`` [B, H, W] (so the argmax picks it) and left as it is elsewhere."""
    out = scores.clone()
    top = scores.amax(dim=1) + 1.0
    out[:, background] = torch.where(where, top, scores[:, background])
    return out
