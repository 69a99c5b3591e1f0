"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021, §4.1) in pure
PyTorch, as the Mask2Former pixel decoder uses it (Cheng et al., CVPR 2022).

:func:`ms_deform_attn` is the sampling core with Deformable DETR's tensor layout: each query reads
``points`` bilinear samples per head and level (``F.grid_sample`` with ``align_corners=False`` and
zeros outside, the convention of the official CUDA kernel) and sums them with its attention
weights. :class:`MSDeformAttn` adds the offset, weight, value and output projections and their
initialisation. No compiled extension is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Deformable attention output ``[B, Q, heads·head_dim]``.

    ``value`` [B, S, heads, head_dim] holds the levels' tokens concatenated row-major;
    ``spatial_shapes`` [L, 2] their (H_l, W_l); ``sampling_locations`` [B, Q, heads, L, P, 2] are
    (x, y) in [0, 1] relative to each level (pixel centres at (j + 0.5) / W_l); and
    ``attention_weights`` [B, Q, heads, L, P] weight the samples.
    """
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = (2 * sampling_locations - 1).to(value.dtype)  # grid_sample's [-1, 1] coordinates
    # [B, Q, heads, L, P] -> [B·heads, 1, Q, L, P]
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
    weights = weights.to(value.dtype)
    out = value.new_zeros(batch * heads, head_dim, queries)
    for level, (height, width) in enumerate(shapes):
        # [B, H_l·W_l, heads, d] -> [B·heads, d, H_l, W_l]
        level_value = per_level[level].permute(0, 2, 3, 1)
        level_value = level_value.reshape(batch * heads, head_dim, height, width)
        # [B, Q, heads, P, 2] -> [B·heads, 1, Q·P, 2]: one row of samples, because the CPU
        # kernel vectorises along the output's last dimension (P = 4 alone wastes it: 1.4× slower)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, queries * points, 2)
        samples = F.grid_sample(
            level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # [B·heads, d, 1, Q·P]
        samples = samples.view(batch * heads, head_dim, queries, points)
        out = out + (samples * weights[:, :, :, level]).sum(-1)  # [B·heads, d, Q]
    return out.view(batch, heads * head_dim, queries).transpose(1, 2)  # [B, Q, heads·d]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with Deformable DETR's projections and initialisation.

    Offsets come from ``sampling_offsets`` (Linear dim -> heads·levels·points·2) in pixels of each
    level; weights from ``attention_weights`` (Linear dim -> heads·levels·points), softmaxed over
    each head's levels·points samples; values and output go through ``value_proj`` and
    ``output_proj`` (Linear dim -> dim). Parameter names follow Deformable DETR's checkpoints.
    """

    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Offsets start on rays: head h points at angle 2πh/heads (its larger coordinate 1), point
        k at (k + 1) times that; all samples start equally weighted."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        rays = torch.stack([angles.cos(), angles.sin()], dim=-1)  # [heads, 2]
        rays = rays / rays.abs().max(dim=-1, keepdim=True).values
        scale = torch.arange(1, self.points + 1, dtype=torch.float32)  # [P]
        bias = rays[:, None, None, :] * scale[None, None, :, None]  # [heads, 1, P, 2]
        bias = bias.expand(self.heads, self.levels, self.points, 2)
        self.sampling_offsets.bias.copy_(bias.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``query`` [B, Q, C] to ``value`` tokens [B, S, C] -> [B, Q, C].

        ``reference_points`` are (x, y) in [0, 1], [B, Q, L, 2] (one per level) or [B, Q, 2] (the
        same on every level); ``spatial_shapes`` [L, 2] are the levels' (H_l, W_l); value tokens
        where ``padding_mask`` [B, S] is True are zeroed.
        """
        batch, queries, _ = query.shape
        heads, levels, points = self.heads, self.levels, self.points
        values = self.value_proj(value)
        if padding_mask is not None:
            values = values.masked_fill(padding_mask[..., None], 0.0)
        values = values.view(batch, value.shape[1], heads, self.dim // heads)  # [B, S, heads, d]
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None, :]  # [B, Q, 1, 2]: every level
        # offsets are in pixels of each level: divide by (W_l, H_l)
        normalizer = spatial_shapes.flip(-1).to(offsets.dtype)  # [L, 2] as (W_l, H_l)
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )  # [B, Q, heads, L, P, 2]
        return self.output_proj(ms_deform_attn(values, spatial_shapes, locations, weights))
