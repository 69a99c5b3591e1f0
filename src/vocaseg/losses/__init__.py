"""Loss functions shared by the trained methods: sigmoid focal, dice, and the mask normaliser N_m."""

from __future__ import annotations

import torch
from torch import Tensor

from vocaseg.dist import all_reduce_sum, dist_info
from vocaseg.losses.dice import dice_loss
from vocaseg.losses.focal import sigmoid_focal_loss, sigmoid_focal_map

__all__ = ["dice_loss", "num_masks", "sigmoid_focal_loss", "sigmoid_focal_map"]


def num_masks(present: Tensor) -> Tensor:
    """N_m: the number of True (image, class) pairs in ``present`` over the global batch, >= 1.

    Under torch.distributed the count is all-reduced and divided by the world size, so every rank
    normalises by the global average (the DETR / Mask2Former convention ZegCLIP's loss uses).
    """
    count = all_reduce_sum(present.sum().to(torch.float32)) / dist_info().world_size
    return count.clamp(min=1.0)
