"""Soft dice loss on sigmoid mask logits (Milletari et al., V-Net, 3DV 2016), in the +1-smoothed
form of ZegCLIP and TagCLIP (docs/methods/tagclip.md §3)."""

from __future__ import annotations

from torch import Tensor


def dice_loss(
    logits: Tensor, targets: Tensor, num_masks: float | Tensor, present: Tensor | None = None
) -> Tensor:
    """``1 - (2·Σσ(x)y + 1) / (Σσ(x) + Σy + 1)`` per (image, channel) map of ``logits`` [B, C, H, W].

    Only maps where ``present`` [B, C] is True count (all maps when None); their sum is divided
    by ``num_masks``.
    """
    prob = logits.sigmoid().flatten(2)  # [B, C, HW]
    targets = targets.flatten(2)
    numerator = 2 * (prob * targets).sum(-1) + 1
    denominator = prob.sum(-1) + targets.sum(-1) + 1
    per_map = 1 - numerator / denominator  # [B, C]
    if present is not None:
        per_map = per_map[present]
    return per_map.sum() / num_masks
