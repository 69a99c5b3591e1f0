"""Pixel-adaptive mask refinement (PAMR) as a pure function.

Araslanov & Roth, "Single-Stage Semantic Segmentation from Image Labels", CVPR 2020, §3.2.
NACLIP (Hajimiri et al., WACV 2025) applies it after stitching and resizing the class scores to
the image, with 10 steps and dilations (8, 16) (``sinahmr/NACLIP`` ``naclip.py``, ``pamr.py``).

Each pixel looks at the 8 neighbours of a 3×3 grid at every dilation d (offsets d·(dy, dx),
replicate padding at the border). From the image I:

    a_p(x) = −|I(x) − I(x + p)| / (1e-8 + 0.1 · σ(x))     per colour channel,

where σ(x) is the standard deviation (unbiased) of I over x and its neighbours at all dilations
(x counted once per dilation). The affinities are averaged over the colour channels and
normalised with a softmax over the neighbours p, giving w_p(x). Every step replaces each mask by
the affinity-weighted mean of its neighbours: m(x) ← Σ_p w_p(x) · m(x + p).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: The 8 neighbour offsets (dy, dx) of a 3×3 grid, row-major.
OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _neighbours(x: Tensor, dilations: Sequence[int]) -> Iterator[Tensor]:
    """Yield x shifted to each neighbour: [B, C, H, W] -> [B, C, H, W] per (dilation, offset),
    where out[..., i, j] = x[..., clamp(i + dy·d), clamp(j + dx·d)]."""
    height, width = x.shape[-2:]
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")  # [B, C, H + 2d, W + 2d]
        for dy, dx in OFFSETS:
            top, left = d + dy * d, d + dx * d
            yield padded[..., top : top + height, left : left + width]


def pamr_affinity(image: Tensor, dilations: Sequence[int] = (8, 16)) -> Tensor:
    """Neighbour weights [B, 8·len(dilations), H, W] (summing to 1 over dim 1) of ``image``
    [B, 3, H, W]."""
    neighbours = torch.stack(list(_neighbours(image, dilations)), dim=2)  # [B, 3, P, H, W]
    centre = image.unsqueeze(2)  # [B, 3, 1, H, W]
    # each 3×3 window holds the centre once per dilation
    windows = torch.cat([centre.expand(-1, -1, len(dilations), -1, -1), neighbours], dim=2)
    spread = windows.std(dim=2, keepdim=True)  # [B, 3, 1, H, W]
    logits = -(neighbours - centre).abs() / (1e-8 + 0.1 * spread)  # [B, 3, P, H, W]
    return logits.mean(dim=1).softmax(dim=1)  # [B, P, H, W]


def pamr(
    image: Tensor, masks: Tensor, steps: int = 10, dilations: Sequence[int] = (8, 16)
) -> Tensor:
    """Refine class scores ``masks`` [B, K, H, W] along the edges of ``image`` [B, 3, H, W].

    ``masks`` of another size are first resized bilinearly (align_corners=True) to the image, as
    in the reference. ``steps=0`` returns ``masks`` unchanged. Output: [B, K, H, W].
    """
    if steps < 0:
        raise ValueError(f"PAMR needs steps >= 0, got {steps}")
    if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0]:
        raise ValueError(
            f"PAMR expects image [B, 3, H, W] and masks [B, K, H, W]; got {tuple(image.shape)} "
            f"and {tuple(masks.shape)}"
        )
    if steps == 0:
        return masks
    if masks.shape[-2:] != image.shape[-2:]:
        masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
    weights = pamr_affinity(image, dilations)  # [B, P, H, W]
    for _ in range(steps):
        refined = torch.zeros_like(masks)
        for p, shifted in enumerate(_neighbours(masks, dilations)):
            refined += weights[:, p : p + 1] * shifted  # [B, 1, H, W] * [B, K, H, W]
        masks = refined
    return masks
