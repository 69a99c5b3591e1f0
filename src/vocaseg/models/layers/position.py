"""DETR's sine positional encoding (Carion et al., "End-to-End Object Detection with Transformers",
ECCV 2020, §3.2 and appendix A.4), in the normalised form Mask2Former's pixel decoder and masked
decoder use (Cheng et al., CVPR 2022): row and column indices 1..H and 1..W scaled to (0, 2π],
``channels_per_axis`` sin/cos features per axis with temperature 10000, channels ordered [y; x].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_encoding(
    height: int,
    width: int,
    channels_per_axis: int = 128,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Encoding ``[2·channels_per_axis, height, width]`` of an unpadded ``height × width`` grid.

    Channel ``2i`` of an axis is ``sin(u / T^(2i/C))`` and channel ``2i + 1`` is
    ``cos(u / T^(2i/C))`` with ``u = 2π·k / (n + 1e-6)`` for the 1-based index ``k`` of ``n``.
    """
    eps, scale = 1e-6, 2 * math.pi
    rows = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    cols = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    rows = rows / (height + eps) * scale  # [H], in (0, 2π]
    cols = cols / (width + eps) * scale  # [W]
    steps = torch.arange(channels_per_axis, device=device, dtype=torch.float32)
    steps = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / channels_per_axis)

    def encode(coords: Tensor) -> Tensor:
        angles = coords[:, None] / steps  # [n, C]
        # interleave: sin on even channels, cos on odd ones -> [n, C]
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(rows)[:, None, :].expand(height, width, channels_per_axis)  # [H, W, C]
    pos_x = encode(cols)[None, :, :].expand(height, width, channels_per_axis)  # [H, W, C]
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).to(dtype)  # [2C, H, W]
