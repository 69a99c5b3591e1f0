"""Attention-to-mask (ATM) blocks (Zhang et al., "SegViT", NeurIPS 2022), as the ZegCLIP and TagCLIP
heads use them (docs/methods/tagclip.md §2.4): class queries cross-attend to patch embeddings, and
the head-averaged *pre-softmax* query–patch attention logits of the last block are the masks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Multi-head cross-attention that also returns its head-averaged attention logits."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)  # [B, h, L, d]

    def logits(self, query: Tensor, memory: Tensor) -> Tensor:
        """Attention logits A [B, heads, Q, M] of ``query`` [B, Q, D] over ``memory`` [B, M, D]."""
        q, k = self._split(self.q(query)), self._split(self.k(memory))
        return (q @ k.transpose(-2, -1)) * self.scale

    def forward(self, query: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the attended output [B, Q, D] and the logits A [B, heads, Q, M]."""
        attn = self.logits(query, memory)
        v = self._split(self.v(memory))
        out = self.attn_drop(attn.softmax(dim=-1)) @ v  # [B, h, Q, d]
        out = out.transpose(1, 2).flatten(2)  # [B, Q, D]
        return self.proj(out), attn


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class ATMBlock(nn.Module):
    """Post-norm transformer decoder block with cross-attention only (no self-attention)."""

    def __init__(self, dim: int = 512, heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.cross_attn = CrossAttention(dim, heads, dropout)
        self.norm_attn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Updated queries [B, Q, D] and mask logits mean_h A_h [B, Q, M]."""
        out, attn = self.cross_attn(query, memory)
        query = self.norm_attn(query + self.drop(out))
        query = self.norm_ffn(query + self.drop(self.ffn(query)))
        return query, attn.mean(dim=1)


class ATMDecoder(nn.Module):
    """A stack of ATM blocks sharing one memory; returns the LAST block's mask logits.

    The last block's value/output projections, norms and FFN never influence that output, so they
    are skipped in the forward and frozen (kept for state-dict parity with released checkpoints).
    """

    def __init__(
        self,
        depth: int = 3,
        dim: int = 512,
        heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ATMBlock(dim, heads, ffn_dim, dropout) for _ in range(depth))
        last = self.blocks[-1]
        for module in (
            last.cross_attn.v,
            last.cross_attn.proj,
            last.norm_attn,
            last.ffn,
            last.norm_ffn,
        ):
            module.requires_grad_(False)

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:
        """Mask logits [B, Q, M] for queries [B, Q, D] over memory [B, M, D]."""
        for block in self.blocks[:-1]:
            query, _ = block(query, memory)
        return self.blocks[-1].cross_attn.logits(query, memory).mean(dim=1)
