"""Mask2Former's set-prediction losses (Cheng et al., CVPR 2022, §3.3 and §4.1), as GKC trains
with them (Han et al., ICCV 2023): point-sampled mask losses with PointRend importance sampling
(Kirillov et al., CVPR 2020, §3.1) and a classification cross-entropy with a down-weighted
no-object class and GKC's region dropout.

Point coordinates are (x, y) in [0, 1] and are read with ``grid_sample`` (bilinear,
``align_corners=False``), so logits at 1/4 resolution and targets at full resolution are sampled
at the same image positions. Everything is computed in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_POINTS = 12544  # 112², Mask2Former's TRAIN_NUM_POINTS
OVERSAMPLE_RATIO = 3.0
IMPORTANCE_SAMPLE_RATIO = 0.75


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples [N, C, P] of maps ``inputs`` [N, C, H, W] at ``coords`` [N, P, 2] (x, y)."""
    grid = (2 * coords - 1).unsqueeze(2).to(inputs.dtype)  # [N, P, 1, 2] in [-1, 1]
    return F.grid_sample(inputs, grid, mode="bilinear", align_corners=False).squeeze(3)


def _uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None):
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def uniform_points(
    count: int, num_points: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """``count`` sets of ``num_points`` uniform (x, y) in [0, 1): [count, num_points, 2]."""
    return _uniform((count, num_points, 2), device, generator)


@torch.no_grad()
def uncertain_points(
    logits: Tensor,
    num_points: int = NUM_POINTS,
    oversample_ratio: float = OVERSAMPLE_RATIO,
    importance_sample_ratio: float = IMPORTANCE_SAMPLE_RATIO,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PointRend's training points [N, num_points, 2] for mask logits [N, 1, H, W].

    Of ``oversample_ratio · num_points`` uniform candidates the ``importance_sample_ratio ·
    num_points`` most uncertain (highest −|logit|) are kept; uniform points fill the rest.
    """
    count = logits.shape[0]
    candidates = uniform_points(count, int(num_points * oversample_ratio), logits.device, generator)
    uncertainty = -point_sample(logits.float(), candidates)[:, 0].abs()  # [N, candidates]
    num_uncertain = int(importance_sample_ratio * num_points)
    top = uncertainty.topk(num_uncertain, dim=1).indices  # [N, num_uncertain]
    chosen = candidates.gather(1, top[..., None].expand(-1, -1, 2))  # [N, num_uncertain, 2]
    extra = uniform_points(count, num_points - num_uncertain, logits.device, generator)
    return torch.cat([chosen, extra], dim=1)


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """Σ over masks of the mean BCE over points, / ``num_masks``; ``logits``, ``targets`` [N, P]."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def point_dice_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """Σ over masks of ``1 − (2Σσ(x)t + 1)/(Σσ(x) + Σt + 1)``, / ``num_masks``; [N, P] inputs."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1) + 1
    denominator = prob.sum(-1) + targets.sum(-1) + 1
    return (1 - numerator / denominator).sum() / num_masks


def mask_losses(
    pred_masks: Tensor,
    target_masks: Tensor,
    num_masks: float | Tensor,
    num_points: int = NUM_POINTS,
    oversample_ratio: float = OVERSAMPLE_RATIO,
    importance_sample_ratio: float = IMPORTANCE_SAMPLE_RATIO,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Point-sampled ``{"mask": BCE, "dice": dice}`` of matched pairs.

    ``pred_masks`` [N, h, w] are logits, ``target_masks`` [N, H, W] binary (any size: both are
    sampled at the same normalised points); ``num_masks`` is the global number of target masks.
    """
    pred = pred_masks.float()[:, None]  # [N, 1, h, w]
    target = target_masks.float()[:, None]  # [N, 1, H, W]
    coords = uncertain_points(
        pred, num_points, oversample_ratio, importance_sample_ratio, generator
    )
    with torch.no_grad():
        labels = point_sample(target, coords)[:, 0]  # [N, P]
    logits = point_sample(pred, coords)[:, 0]  # [N, P]
    return {
        "mask": sigmoid_bce_loss(logits, labels, num_masks),
        "dice": point_dice_loss(logits, labels, num_masks),
    }


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean-over-points BCE of every prediction [Q, P] against every target [N, P] -> [Q, N]."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    cost = positive @ targets.T + negative @ (1 - targets).T  # [Q, N]
    return cost / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every prediction [Q, P] against every target [N, P] -> [Q, N]."""
    prob = logits.sigmoid()
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def classification_loss(
    logits: Tensor,
    matches: Sequence[tuple[Tensor, Tensor]],
    labels: Sequence[Tensor],
    no_object_weight: float = 0.1,
    region_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cross-entropy of ``logits`` [B, Q, K + 1] (last column = no-object), weighted mean.

    Query ``matches[b][0][i]`` targets ``labels[b][matches[b][1][i]]``; unmatched queries target
    no-object (weight ``no_object_weight``, others 1). Each matched query is ignored with
    probability ``region_dropout``, drawn from ``generator`` (else the global RNG) on every call.
    Columns of logit −inf (padding) take no probability.
    """
    batch, queries, columns = logits.shape
    target = torch.full((batch, queries), columns - 1, dtype=torch.long, device=logits.device)
    for b, (query_idx, target_idx) in enumerate(matches):
        target[b, query_idx.to(logits.device)] = labels[b].to(logits.device)[target_idx]
    matched = torch.zeros(batch, queries, dtype=torch.bool, device=logits.device)
    for b, (query_idx, _) in enumerate(matches):
        matched[b, query_idx.to(logits.device)] = True
    if region_dropout > 0:
        flat = matched.nonzero(as_tuple=True)
        drop = _uniform((flat[0].numel(),), logits.device, generator) < region_dropout
        target[flat[0][drop], flat[1][drop]] = -100
    weight = torch.ones(columns, device=logits.device)
    weight[-1] = no_object_weight
    total = F.cross_entropy(
        logits.float().transpose(1, 2), target, weight=weight, ignore_index=-100, reduction="sum"
    )
    kept = target != -100
    return total / weight[target[kept]].sum().clamp(min=1e-12)
