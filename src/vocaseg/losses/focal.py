"""Sigmoid focal loss on dense mask logits (Lin et al., "Focal Loss for Dense Object Detection",
ICCV 2017), as used by ZegCLIP and TagCLIP (docs/methods/tagclip.md §3).

Each (image, channel) map contributes its pixel mean; the maps are summed and divided by the
normaliser ``num_masks`` (N_m, see :func:`vocaseg.losses.num_masks`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_map(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Per-pixel focal loss, same shape as ``logits``; ``targets`` holds 0/1 floats."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ce * (1 - p_t) ** gamma


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    num_masks: float | Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Focal loss of ``logits`` [B, C, H, W] against 0/1 ``targets`` of the same shape.

    Pixel mean per (image, channel) map, summed over the B·C maps, divided by ``num_masks``.
    """
    per_map = sigmoid_focal_map(logits, targets, alpha, gamma).flatten(2).mean(-1)  # [B, C]
    return per_map.sum() / num_masks
