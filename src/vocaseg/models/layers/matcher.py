"""Hungarian matching of mask predictions to ground-truth segments (Mask2Former, Cheng et al.,
CVPR 2022, §3.3; Carion et al., DETR, ECCV 2020, §3.1), as GKC runs it at every prediction point
(Han et al., ICCV 2023).

Cost of query q for target n: ``cost_class · (−softmax(logits_q)[label_n]) + cost_mask · BCE +
cost_dice · Dice``, the mask terms on ``num_points`` uniform points shared by all pairs of an
image, sampled bilinearly from the logits and the target masks, in fp32. The assignment is
scipy's ``linear_sum_assignment``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from vocaseg.losses.mask_losses import (
    NUM_POINTS,
    pairwise_dice,
    pairwise_sigmoid_bce,
    point_sample,
    uniform_points,
)


class HungarianMatcher:
    """One-to-one assignment of queries to targets per image, minimising the weighted cost."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = NUM_POINTS,
    ) -> None:
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        labels: Tensor,
        masks: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Cost [Q, N] of one image: ``class_logits`` [Q, K + 1], ``mask_logits`` [Q, h, w],
        ``labels`` [N], ``masks`` [N, H, W]."""
        queries, targets = mask_logits.shape[0], masks.shape[0]
        cost_class = -class_logits.float().softmax(-1)[:, labels.to(class_logits.device)]  # [Q, N]
        coords = uniform_points(1, self.num_points, mask_logits.device, generator)  # [1, P, 2]
        pred = point_sample(mask_logits.float()[:, None], coords.expand(queries, -1, -1))[:, 0]
        target = point_sample(
            masks.to(mask_logits.device).float()[:, None], coords.expand(targets, -1, -1)
        )[:, 0]  # [N, P]
        return (
            self.cost_class * cost_class
            + self.cost_mask * pairwise_sigmoid_bce(pred, target)
            + self.cost_dice * pairwise_dice(pred, target)
        )

    @torch.no_grad()
    def __call__(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        targets: Sequence[dict[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Per image, (query indices, target indices) as int64 tensors, query indices ascending.

        ``class_logits`` [B, Q, K + 1], ``mask_logits`` [B, Q, h, w]; ``targets[b]`` holds
        ``labels`` [N_b] and ``masks`` [N_b, H, W]; an image with no targets gets empty indices.
        """
        matches = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.empty(0, dtype=torch.long)
                matches.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(
                class_logits[b], mask_logits[b], target["labels"], target["masks"], generator
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append(
                (torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long))
            )
        return matches
