"""GroupViT grouping (Xu et al., "GroupViT: Semantic Segmentation Emerges from Text Supervision",
CVPR 2022, §3.1; NVlabs/GroupViT ``models/group_vit.py``) and ZeroSeg's 3-stage segmentation head
over it (Chen et al., ICCV 2023, §3.2: five transformer layers with grouping after the 2nd and
4th, 32 then 8 group tokens, then an MLP into CLIP's embedding space).

Parameter names follow GroupViT's image encoder (``layers.N.group_token``, ``blocks``,
``downsample.*``, ``group_projector``, ``norm``), so GroupViT stage weights load when the widths
match. A grouping block assigns every token to exactly one group with a Gumbel-softmax over the
*group* axis, hard (one-hot) in the forward pass and straight-through in the backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.models.layers.vit import Block, Mlp

PROJ_NORMS = ("none", "bn", "ln")


class MixerMlp(Mlp):
    """An MLP along the token axis: [B, S, D] -> [B, S_out, D] (Linear(S→h) · GELU · Linear(h→S_out))."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class CrossAttention(nn.Module):
    """Multi-head attention of ``query`` over ``key`` with separate biased q/k/v projections."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        q, k, v = (
            self._heads(self.q_proj(query)),
            self._heads(self.k_proj(key)),
            self._heads(self.v_proj(key)),
        )
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, S, D / heads]
        return self.proj(out.transpose(1, 2).flatten(2))  # [B, S, D]


class CrossAttnBlock(nn.Module):
    """Post-norm cross-attention block: t += MHA(t, x); t += MLP(LN t); t = LN(t)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim, eps=eps)

    def forward(self, query: Tensor, key: Tensor) -> Tensor:
        x = query + self.attn(query, key)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)


def gumbel_noise(like: Tensor) -> Tensor:
    """Gumbel(0, 1) samples shaped like ``like``: -log(-log u), u ~ U(0, 1) kept off 0."""
    u = torch.rand_like(like).clamp_(min=torch.finfo(like.dtype).tiny)
    return -torch.log(-torch.log(u))


def straight_through_onehot(y: Tensor, dim: int) -> Tensor:
    """onehot(argmax y) in the forward pass, the gradient of ``y`` in the backward pass."""
    hard = torch.zeros_like(y).scatter_(dim, y.argmax(dim, keepdim=True), 1.0)
    return hard - y.detach() + y


@dataclass
class Assignment:
    """Assignments of a grouping block, [B, S, N] (group s, token n), summing to 1 over S:
    ``hard`` is what the block used (one-hot forward, straight-through gradient), ``soft`` is
    softmax_S of the noise-free logits (for inference)."""

    hard: Tensor
    soft: Tensor


class AssignAttention(nn.Module):
    """Single-head assignment of N tokens to S groups.

    Logits L = (W_q t)(W_k x)ᵀ/√D [B, S, N], softmax over the group axis S. Training: hard
    Gumbel-softmax with temperature ``gumbel_tau`` and straight-through; eval: the hard argmax of
    softmax_S(L). Logits, noise and softmax run in fp32 even under autocast. The output is
    W_o(Σ_n A[s,n] W_v x_n / (Σ_n A[s,n] + ``assign_eps``)).
    """

    def __init__(self, dim: int, gumbel_tau: float = 1.0, assign_eps: float = 1.0) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.gumbel_tau = gumbel_tau
        self.assign_eps = assign_eps
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor) -> tuple[Tensor, Assignment]:
        """Group tokens ``query`` [B, S, D] and tokens ``key`` [B, N, D] -> [B, S, D], assignment."""
        q, k = self.q_proj(query), self.k_proj(key)
        with torch.autocast(device_type=q.device.type, enabled=False):
            logits = (q.float() @ k.float().transpose(1, 2)) * self.scale  # [B, S, N]
            soft = logits.softmax(dim=1)
            if self.training:
                y = ((logits + gumbel_noise(logits)) / self.gumbel_tau).softmax(dim=1)
            else:
                y = soft
            hard = straight_through_onehot(y, dim=1)
        v = self.v_proj(key)  # [B, N, D]
        weights = hard / (hard.sum(dim=-1, keepdim=True) + self.assign_eps)  # [B, S, N]
        out = self.proj(weights.to(v.dtype) @ v)  # [B, S, D]
        return out, Assignment(hard=hard, soft=soft)


class GroupingBlock(nn.Module):
    """Merge N tokens into ``num_output_groups`` segment tokens (GroupViT §3.1).

    LN on tokens and group tokens; a token-mixing MLP maps the S group tokens to S_out (then LN);
    a post-norm cross-attention block lets them read the tokens; :class:`AssignAttention` assigns
    and pools; then a residual from the projected group tokens and a channel MLP
    (``reduction`` = LN + bias-free Linear on the skip when ``out_dim`` differs).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_group_tokens: int,
        num_output_groups: int,
        out_dim: int | None = None,
        eps: float = 1e-5,
        gumbel_tau: float = 1.0,
        assign_eps: float = 1.0,
    ) -> None:
        super().__init__()
        out_dim = out_dim or dim
        self.norm_tokens = nn.LayerNorm(dim, eps=eps)
        self.mlp_inter = MixerMlp(num_group_tokens, dim // 2, num_output_groups)
        self.norm_post_tokens = nn.LayerNorm(dim, eps=eps)
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.pre_assign_attn = CrossAttnBlock(dim, num_heads, eps=eps)
        self.assign = AssignAttention(dim, gumbel_tau, assign_eps)
        self.norm_new_x = nn.LayerNorm(dim, eps=eps)
        self.mlp_channels = Mlp(dim, 4 * dim, out_dim)
        self.reduction = (
            nn.Identity()
            if out_dim == dim
            else nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, out_dim, bias=False))
        )

    def forward(self, x: Tensor, group_tokens: Tensor) -> tuple[Tensor, Assignment]:
        """Tokens ``x`` [B, N, D], group tokens [B, S, D] -> segment tokens [B, S_out, D_out]."""
        x = self.norm_x(x)
        tokens = self.norm_post_tokens(
            self.mlp_inter(self.norm_tokens(group_tokens))
        )  # [B, S_out, D]
        tokens = self.pre_assign_attn(tokens, x)
        pooled, assignment = self.assign(tokens, x)
        new = pooled + tokens
        return self.reduction(new) + self.mlp_channels(self.norm_new_x(new)), assignment


class GroupingLayer(nn.Module):
    """One stage: [tokens ; group tokens] through ``depth`` ViT blocks, then the grouping block.

    ``group_token`` is a learnable [1, S, D] parameter (trunc-normal 0.02, or zero when a
    ``group_projector`` adds a projection of the previous stage's group tokens). A stage without
    group tokens and ``downsample`` only runs its blocks.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        num_group_tokens: int,
        drop_path: Sequence[float],
        downsample: GroupingBlock | None = None,
        group_projector: nn.Module | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_group_tokens = num_group_tokens
        if num_group_tokens:
            self.group_token = nn.Parameter(torch.zeros(1, num_group_tokens, dim))
            if group_projector is None:
                nn.init.trunc_normal_(self.group_token, std=0.02)
        else:
            self.group_token = None
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, drop_path=drop_path[i], eps=eps) for i in range(depth)
        )
        self.downsample = downsample
        self.group_projector = group_projector

    def forward(
        self, x: Tensor, prev_group_tokens: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Assignment | None]:
        """Tokens [B, N, D] -> (output tokens, this stage's group tokens after the blocks, the
        assignment or None). Without a ``downsample`` the output tokens are the input tokens."""
        group_tokens = None
        if self.group_token is not None:
            group_tokens = self.group_token.expand(x.shape[0], -1, -1)
            if self.group_projector is not None:
                group_tokens = group_tokens + self.group_projector(prev_group_tokens)
            x = torch.cat([x, group_tokens], dim=1)  # [B, N + S, D]
        for block in self.blocks:
            x = block(x)
        if group_tokens is not None:
            x, group_tokens = x[:, : -self.num_group_tokens], x[:, -self.num_group_tokens :]
        if self.downsample is None:
            return x, group_tokens, None
        out, assignment = self.downsample(x, group_tokens)
        return out, group_tokens, assignment


class Projector(nn.Module):
    """Linear(D, hidden) · [BatchNorm | LayerNorm] · GELU · Linear(hidden, out) on [..., D]."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int, norm: str = "none") -> None:
        super().__init__()
        if norm not in PROJ_NORMS:
            raise ValueError(f"proj_norm must be one of {PROJ_NORMS}, got {norm!r}")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.norm = {
            "none": nn.Identity,
            "bn": nn.BatchNorm1d,
            "ln": nn.LayerNorm,
        }[norm](hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if isinstance(self.norm, nn.BatchNorm1d):
            h = self.norm(h.flatten(0, -2)).view_as(h)  # statistics over every row of the call
        else:
            h = self.norm(h)
        return self.fc2(self.act(h))


@dataclass
class SegHeadOutput:
    """Segment tokens ``segments`` s [B, S, D]; per-stage ``assignments`` ([B, 32, N], then
    [B, 8, 32]); projections ``g`` = proj(s_i) [B, S, P] and ``z`` = proj(mean_i s_i) [B, P]."""

    segments: Tensor
    assignments: list[Assignment]
    g: Tensor
    z: Tensor


class SegmentationHead(nn.Module):
    """ZeroSeg's grouping head (defaults: ``depths (2, 2, 1)``, ``num_group_tokens (32, 8, 0)``,
    ``num_output_groups (32, 8)``) plus the shared CLIP-space projector.

    Input: image tokens [B, N, ``in_dim``] (no positional embedding is added here); a Linear
    ``embed`` maps them to ``dim`` when the widths differ. Drop path rises linearly from 0 to
    ``drop_path`` over all blocks. Init as GroupViT: trunc-normal(0.02) Linear weights, zero biases.
    """

    def __init__(
        self,
        in_dim: int = 768,
        dim: int = 768,
        num_heads: int = 12,
        depths: Sequence[int] = (2, 2, 1),
        num_group_tokens: Sequence[int] = (32, 8, 0),
        num_output_groups: Sequence[int] = (32, 8),
        drop_path: float = 0.1,
        gumbel_tau: float = 1.0,
        assign_eps: float = 1.0,
        proj_dim: int = 768,
        proj_hidden_dim: int = 4096,
        proj_norm: str = "none",
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not len(depths) == len(num_group_tokens) == len(num_output_groups) + 1:
            raise ValueError(
                "depths and num_group_tokens need one entry per stage, outputs one less"
            )
        self.embed = nn.Linear(in_dim, dim) if in_dim != dim else None
        total = sum(depths)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]  # linear 0 -> drop_path
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            downsample = None
            if i < len(num_output_groups):
                downsample = GroupingBlock(
                    dim,
                    num_heads,
                    num_group_tokens[i],
                    num_output_groups[i],
                    eps=eps,
                    gumbel_tau=gumbel_tau,
                    assign_eps=assign_eps,
                )
            projector = None
            if i > 0 and num_group_tokens[i]:
                projector = nn.Sequential(
                    nn.LayerNorm(dim, eps=eps),
                    MixerMlp(num_group_tokens[i - 1], dim // 2, num_group_tokens[i]),
                )
            self.layers.append(
                GroupingLayer(
                    dim,
                    depth,
                    num_heads,
                    num_group_tokens[i],
                    rates[first : first + depth],
                    downsample,
                    projector,
                    eps,
                )
            )
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.proj = Projector(dim, proj_hidden_dim, proj_dim, proj_norm)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> SegHeadOutput:
        """Tokens [B, N, in_dim] -> :class:`SegHeadOutput`."""
        if self.embed is not None:
            x = self.embed(x)
        group_tokens = None
        assignments = []
        for layer in self.layers:
            x, group_tokens, assignment = layer(x, group_tokens)
            if assignment is not None:
                assignments.append(assignment)
        segments = self.norm(x)  # [B, S, D]
        both = torch.cat([segments.mean(dim=1, keepdim=True), segments], dim=1)  # [B, 1 + S, D]
        projected = self.proj(both)  # one call: BatchNorm sees pooled and per-segment rows together
        return SegHeadOutput(segments, assignments, g=projected[:, 1:], z=projected[:, 0])


def chain_assignments(assignments: Sequence[Tensor]) -> Tensor:
    """Token-to-final-segment map [B, S_last, N] from per-stage [B, S_k, S_{k-1}] maps
    (stage 1 first: [B, S_1, N]): A_last ··· A_2 · A_1. One-hot inputs give one-hot columns;
    soft ones give columns that sum to 1."""
    chained = assignments[0]
    for assignment in assignments[1:]:
        chained = assignment @ chained  # [B, S_k, S_{k-1}] @ [B, S_{k-1}, N]
    return chained
