"""ZeroSeg's distillation losses (Chen et al., ICCV 2023, §3.3): the pooled feature z is pulled to
every multi-scale CLIP view embedding (multi-scale L1), and each segment token to the L1-nearest
*local* view of its own image (segment matching, Eq. 1: not Hungarian, v1 never a candidate).

Targets v [B, V, D] hold the full-image view v1 first, then the grid cells. Under
``target_norm="l2"`` they are L2-normalised; predictions stay raw unless ``pred_norm``. The
distance d(a, b) is the mean over the D dims of |a − b| (``l1_reduce="mean"``) or the sum
(``"sum"``, the literal ‖a − b‖₁).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TARGET_NORMS = ("l2", "none")
L1_REDUCE = ("mean", "sum")
MS_VIEWS = ("all", "global")


def _prepare(
    pred: Tensor, targets: Tensor, target_norm: str, pred_norm: bool
) -> tuple[Tensor, Tensor]:
    if target_norm not in TARGET_NORMS:
        raise ValueError(f"target_norm must be one of {TARGET_NORMS}, got {target_norm!r}")
    pred, targets = pred.float(), targets.detach().float()
    if target_norm == "l2":
        targets = F.normalize(targets, dim=-1)
    if pred_norm:
        pred = F.normalize(pred, dim=-1)
    return pred, targets


def _reduce(distance: Tensor, dim: int, l1_reduce: str) -> Tensor:
    """Summed |a − b| distances -> d under ``l1_reduce``."""
    if l1_reduce not in L1_REDUCE:
        raise ValueError(f"l1_reduce must be one of {L1_REDUCE}, got {l1_reduce!r}")
    return distance / dim if l1_reduce == "mean" else distance


def multiscale_l1(
    z: Tensor,
    targets: Tensor,
    target_norm: str = "l2",
    pred_norm: bool = False,
    l1_reduce: str = "mean",
    views: str = "all",
) -> Tensor:
    """L_ms = mean_b Σ_k d(z_b, v_bk) for pooled features ``z`` [B, D] and ``targets`` [B, V, D];
    ``views="global"`` keeps only the full-image view v1 (the paper's Table 4 baseline)."""
    if views not in MS_VIEWS:
        raise ValueError(f"ms_views must be one of {MS_VIEWS}, got {views!r}")
    z, targets = _prepare(z, targets, target_norm, pred_norm)
    if views == "global":
        targets = targets[:, :1]
    distance = (z[:, None] - targets).abs().sum(dim=-1)  # [B, V]
    return _reduce(distance, z.shape[-1], l1_reduce).sum(dim=1).mean()


def match_segments(
    g: Tensor,
    targets: Tensor,
    target_norm: str = "l2",
    pred_norm: bool = False,
    l1_reduce: str = "mean",
) -> tuple[Tensor, Tensor]:
    """Nearest local view per segment token: distances d [B, S] and view indices [B, S] into
    ``targets`` (always ≥ 1: the full-image view v1 at index 0 is never a candidate). Tokens
    choose independently; views may be shared or unused."""
    g, targets = _prepare(g, targets, target_norm, pred_norm)
    local = targets[:, 1:]  # [B, V - 1, D]
    distance = torch.cdist(g, local, p=1)  # [B, S, V - 1], summed |·| over D
    best, index = _reduce(distance, g.shape[-1], l1_reduce).min(dim=-1)
    return best, index + 1


def segment_matching_l1(
    g: Tensor,
    targets: Tensor,
    target_norm: str = "l2",
    pred_norm: bool = False,
    l1_reduce: str = "mean",
) -> Tensor:
    """L_match = mean_b Σ_i min_{j ≥ 2} d(g_bi, v_bj) for segment projections ``g`` [B, S, D]."""
    best, _ = match_segments(g, targets, target_norm, pred_norm, l1_reduce)
    return best.sum(dim=1).mean()
