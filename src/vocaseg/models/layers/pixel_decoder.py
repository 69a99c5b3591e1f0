"""Mask2Former's multi-scale deformable-attention pixel decoder (Cheng et al., "Masked-attention
Mask Transformer for Universal Image Segmentation", CVPR 2022, §3.2 and appendix A), the pixel
decoder of GKC (Han et al., ICCV 2023).

res5, res4, res3 are projected to ``dim`` channels (1x1 conv + GroupNorm), given a learned level
embedding and the sine encoding, and refined jointly by post-norm deformable-attention encoder
layers; an FPN step adds res2 to the upsampled finest level and a 1x1 conv gives the mask
features at stride 4. Parameter names follow Mask2Former's ``MSDeformAttnPixelDecoder``
(``input_proj``, ``transformer.level_embed``, ``transformer.encoder.layers``, ``adapter_1``,
``layer_1``, ``mask_features``), so released checkpoints map onto it by prefix alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.models.layers.deform_attn import MSDeformAttn
from vocaseg.models.layers.position import sine_position_encoding

ENCODER_LEVELS = ("res5", "res4", "res3")


class ConvNorm(nn.Conv2d):
    """Bias-free conv, GroupNorm (child ``norm``, detectron2's key layout) and optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, groups: int, relu: bool):
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
        self.norm = nn.GroupNorm(groups, out_channels)
        self.relu = relu
        nn.init.kaiming_uniform_(self.weight, a=1)  # detectron2's c2_xavier_fill

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


class DeformableEncoderLayer(nn.Module):
    """x <- LN(x + MSDA(x + pos, x)); x <- LN(x + FFN(x)) with a ReLU FFN (dropout 0)."""

    def __init__(self, dim: int, ffn_dim: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, reference: Tensor, shapes: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x + pos, reference, x, shapes))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class DeformableEncoder(nn.Module):
    """Level embedding + a stack of :class:`DeformableEncoderLayer` over all levels' tokens."""

    def __init__(
        self, dim: int, depth: int, ffn_dim: int, levels: int, heads: int, points: int
    ) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(levels, dim))
        # ``encoder.layers.i`` is the released key layout
        self.encoder = nn.ModuleDict(
            {
                "layers": nn.ModuleList(
                    DeformableEncoderLayer(dim, ffn_dim, levels, heads, points)
                    for _ in range(depth)
                )
            }
        )
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, sources: Sequence[Tensor]) -> list[Tensor]:
        """Encode levels [B, C, h_l, w_l] jointly; returns them refined, same shapes and order."""
        batch, dim = sources[0].shape[:2]
        shapes = [tuple(src.shape[-2:]) for src in sources]
        tokens = torch.cat([src.flatten(2).transpose(1, 2) for src in sources], dim=1)  # [B, S, C]
        pos = torch.cat(
            [
                sine_position_encoding(h, w, dim // 2, device=tokens.device, dtype=tokens.dtype)
                .flatten(1)
                .T  # [h·w, C]
                + self.level_embed[level]
                for level, (h, w) in enumerate(shapes)
            ]
        )[None]  # [1, S, C]
        reference = torch.cat(
            [pixel_centres(h, w, tokens.device, tokens.dtype) for h, w in shapes]
        )  # [S, 2]
        reference = reference[None].expand(batch, -1, -1)  # [B, S, 2], one point for all levels
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=tokens.device)
        for layer in self.encoder["layers"]:
            tokens = layer(tokens, pos, reference, spatial_shapes)
        levels = tokens.split([h * w for h, w in shapes], dim=1)
        # [B, h·w, C] -> [B, C, h, w]
        return [x.transpose(1, 2).reshape(batch, dim, h, w) for x, (h, w) in zip(levels, shapes)]


def pixel_centres(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Normalised (x, y) pixel centres ``[height·width, 2]`` of a grid, row-major."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)


class PixelDecoder(nn.Module):
    """Deformable-attention pixel decoder: res2..res5 -> (mask features, 3 memories).

    ``in_channels`` are the channels of res2..res5; ``dim`` the width of the encoder and FPN
    (256), ``mask_dim`` of the mask features, ``groups`` the GroupNorm groups (32).
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (256, 512, 1024, 2048),
        dim: int = 256,
        mask_dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        points: int = 4,
        ffn_dim: int = 1024,
        groups: int = 32,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"in_channels must list res2..res5, got {list(in_channels)}")
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, dim, kernel_size=1), nn.GroupNorm(groups, dim))
            for channels in reversed(in_channels[1:])  # res5, res4, res3
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.transformer = DeformableEncoder(
            dim, depth, ffn_dim, len(ENCODER_LEVELS), heads, points
        )
        self.adapter_1 = ConvNorm(in_channels[0], dim, 1, groups, relu=False)
        self.layer_1 = ConvNorm(dim, dim, 3, groups, relu=True)
        self.mask_features = nn.Conv2d(dim, mask_dim, kernel_size=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        """``features`` res2..res5 [B, C_l, H/s, W/s] -> mask features [B, mask_dim, H/4, W/4] and
        the encoder memories [B, dim, h_l, w_l] of res5, res4, res3, in that order.

        Runs in fp32 even under autocast (deformable sampling in half precision is inexact).
        """
        res2 = features["res2"]
        with torch.autocast(res2.device.type, enabled=False):
            sources = [
                proj(features[name].float()) for proj, name in zip(self.input_proj, ENCODER_LEVELS)
            ]
            memories = self.transformer(sources)
            lateral = self.adapter_1(res2.float())
            finest = F.interpolate(
                memories[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            mask_features = self.mask_features(self.layer_1(lateral + finest))
        return mask_features, memories
