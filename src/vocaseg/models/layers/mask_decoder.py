"""Mask2Former's masked-attention transformer decoder (Cheng et al., CVPR 2022, §3.2), with the
class head of GKC (Han et al., ICCV 2023): a class *feature* (Linear 256 -> 256) that a later
projection compares with CLIP text embeddings, in place of Mask2Former's class logits.

Learned query features X₀ and a separate table of learned query positions P; layer i reads memory
level i mod L (coarse to fine). Each layer runs masked cross-attention (a query attends only where
its previous mask, resized to the level, has sigmoid >= 0.5; a query blocked everywhere is
unblocked), self-attention and an FFN, each post-norm with a residual. The shared head on LN(X)
runs on X₀ and after every layer, so ``layers`` + 1 predictions come out. Parameter names follow
Mask2Former's ``MultiScaleMaskedTransformerDecoder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.models.layers.position import sine_position_encoding


def _xavier(module: nn.Module) -> None:
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)


class CrossAttentionLayer(nn.Module):
    """x <- LN(x + MHA(x + query_pos, memory + pos, memory; blocked positions masked))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier(self)

    def forward(
        self, x: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor, blocked: Tensor | None
    ) -> Tensor:
        """``x`` [B, Q, C], ``memory`` [B, M, C], ``pos`` [M, C] or [B, M, C]; ``blocked``
        [B·heads, Q, M] is True where a query may not look."""
        out = self.multihead_attn(
            x + query_pos, memory + pos, memory, attn_mask=blocked, need_weights=False
        )[0]
        return self.norm(x + out)


class SelfAttentionLayer(nn.Module):
    """x <- LN(x + MHA(x + query_pos, x + query_pos, x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier(self)

    def forward(self, x: Tensor, query_pos: Tensor) -> Tensor:
        q = x + query_pos
        return self.norm(x + self.self_attn(q, q, x, need_weights=False)[0])


class FFNLayer(nn.Module):
    """x <- LN(x + Linear(ReLU(Linear(x))))."""

    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        _xavier(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MLP(nn.Module):
    """``depth`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


def blocked_positions(mask_logits: Tensor, size: Sequence[int], heads: int) -> Tensor:
    """Masked-attention mask [B·heads, Q, h·w]: True where sigmoid(logits resized to ``size``) < 0.5.

    Detached; a query whose mask is empty at this level is unblocked everywhere, so its attention
    stays defined (plain cross-attention for that query).
    """
    resized = F.interpolate(
        mask_logits.detach(), size=tuple(size), mode="bilinear", align_corners=False
    )
    blocked = resized.sigmoid().flatten(2) < 0.5  # [B, Q, h·w]
    blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
    # [B, Q, h·w] -> [B·heads, Q, h·w], batch-major as nn.MultiheadAttention expects
    return blocked.repeat_interleave(heads, dim=0)


class MaskedAttentionDecoder(nn.Module):
    """Masked-attention decoder: memories + mask features -> ``layers`` + 1 predictions.

    ``dim`` is the width of queries and memories (256), ``mask_dim`` of the mask features,
    ``class_dim`` of the class feature, ``levels`` the number of memories read in turn.
    """

    def __init__(
        self,
        dim: int = 256,
        heads: int = 8,
        layers: int = 9,
        queries: int = 100,
        ffn_dim: int = 2048,
        levels: int = 3,
        mask_dim: int = 256,
        class_dim: int = 256,
    ) -> None:
        super().__init__()
        self.heads, self.num_layers, self.num_levels = heads, layers, levels
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads) for _ in range(layers)
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(dim, ffn_dim) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(queries, dim)  # X₀
        self.query_embed = nn.Embedding(queries, dim)  # P, the query positions
        self.level_embed = nn.Embedding(levels, dim)
        self.class_embed = nn.Linear(dim, class_dim)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def head(self, x: Tensor, mask_features: Tensor) -> dict[str, Tensor]:
        """Shared head on LN(x): class feature [B, Q, class_dim], mask logits [B, Q, H/4, W/4]."""
        decoded = self.decoder_norm(x)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        return {"class_feature": self.class_embed(decoded), "mask_logits": mask_logits}

    def forward(self, memories: Sequence[Tensor], mask_features: Tensor) -> list[dict[str, Tensor]]:
        """``memories`` [B, dim, h_l, w_l] (coarse to fine), ``mask_features`` [B, mask_dim, H/4,
        W/4] -> ``layers`` + 1 dicts of :meth:`head` outputs; the last is the final prediction."""
        if len(memories) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} memory levels, got {len(memories)}")
        batch = mask_features.shape[0]
        sizes = [memory.shape[-2:] for memory in memories]
        sources, positions = [], []
        for level, memory in enumerate(memories):
            height, width = memory.shape[-2:]
            # [B, C, h, w] -> [B, h·w, C], plus the level embedding
            sources.append(memory.flatten(2).transpose(1, 2) + self.level_embed.weight[level])
            pos = sine_position_encoding(
                height, width, memory.shape[1] // 2, device=memory.device, dtype=memory.dtype
            )
            positions.append(pos.flatten(1).T)  # [h·w, C]
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)  # [B, Q, C]
        x = self.query_feat.weight[None].expand(batch, -1, -1)  # [B, Q, C]
        outputs = [self.head(x, mask_features)]
        for index in range(self.num_layers):
            level = index % self.num_levels
            blocked = blocked_positions(outputs[-1]["mask_logits"], sizes[level], self.heads)
            x = self.transformer_cross_attention_layers[index](
                x, sources[level], positions[level], query_pos, blocked
            )
            x = self.transformer_self_attention_layers[index](x, query_pos)
            x = self.transformer_ffn_layers[index](x)
            outputs.append(self.head(x, mask_features))
        return outputs
