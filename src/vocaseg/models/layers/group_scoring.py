"""Segment-level scoring at inference, as GroupViT evaluates its grouping (Xu et al., CVPR 2022,
§3.3; NVlabs/GroupViT ``segmentation/evaluation/group_vit_seg.py``) and ZeroSeg reuses it (Chen et
al., ICCV 2023, §4.1):

- pixels -> segments: the stages' soft assignments chained to [S, N], upsampled bilinearly to
  the input and turned into a one-hot map by the argmax over segments;
- segments -> classes: cosine of the L2-normalised segment embeddings with the text embeddings
  times a logit scale, softmax over classes; the top-k filter keeps, for every segment, only the
  k classes the pooled image embedding ranks highest and multiplies the filtered softmax by the
  unfiltered one;
- the background rule: a pixel is background where its best class score is below
  t = min(threshold, the largest segment-class probability of the image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vocaseg.models.layers.grouping import chain_assignments


def segment_onehot(
    assignments: Sequence[Tensor], grid: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """Per-stage soft assignments ([B, S_1, N], then [B, S_k, S_{k-1}], N = h·w) -> one-hot
    pixel-to-segment map [B, S_last, H, W] at ``size`` (H, W)."""
    chained = chain_assignments(assignments)  # [B, S, N]; columns sum to 1
    batch, segments, _ = chained.shape
    maps = chained.view(batch, segments, *grid)  # [B, S, h, w]
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return torch.zeros_like(maps).scatter_(1, maps.argmax(dim=1, keepdim=True), 1.0)


def classify_segments(
    segments: Tensor, pooled: Tensor, text: Tensor, logit_scale: float, topk: int
) -> Tensor:
    """Class probabilities P [B, S, C] of segment embeddings ``segments`` [B, S, D] given the
    pooled embedding ``pooled`` [B, D] and ``text`` [C, D] (all L2-normalised here).

    ``topk`` > 0: logits of the classes outside the image's top-min(k, C) (ranked by the pooled
    embedding) become -inf before the softmax, and that softmax is multiplied by the unfiltered
    one; ``topk`` = 0: the unfiltered softmax.
    """
    segments, pooled = F.normalize(segments, dim=-1), F.normalize(pooled, dim=-1)
    text = F.normalize(text, dim=-1)
    logits = logit_scale * segments @ text.t()  # [B, S, C]
    full = logits.softmax(dim=-1)
    if topk <= 0:
        return full
    ranking = (logit_scale * pooled @ text.t()).softmax(dim=-1)  # [B, C]
    top = ranking.topk(min(topk, text.shape[0]), dim=-1).indices  # [B, k]
    keep = torch.zeros_like(ranking).scatter_(1, top, 1.0) > 0  # [B, C]
    filtered = logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(dim=-1)
    return filtered * full


def pixel_scores(onehot: Tensor, probs: Tensor) -> Tensor:
    """Each pixel takes its segment's class probabilities: [B, S, H, W], [B, S, C] -> [B, C, H, W]."""
    return torch.einsum("bshw,bsc->bchw", onehot, probs)


def groupvit_background(scores: Tensor, best: Tensor, threshold: float) -> Tensor:
    """Background channel [B, 1, H, W]: 1 where max_c ``scores`` [B, C, H, W] is below
    min(``threshold``, ``best``), ``best`` [B, 1, H, W] being the image's largest P entry."""
    limit = best.clamp(max=threshold)
    return (scores.amax(dim=1, keepdim=True) < limit).to(scores.dtype)
