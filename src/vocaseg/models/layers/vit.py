"""Plain ViT building blocks (Dosovitskiy et al., ICLR 2021) with the parameter names of the MAE
release (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022;
facebookresearch/mae, which uses timm's ``Block``), so MAE checkpoints load without renaming:
``patch_embed.proj``, ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``.

Also the fixed 2-D sin-cos positional table of MAE (``util/pos_embed.py``) and its bicubic resize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.clip.model import resize_pos_embed as _resize_square_table


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drops the whole residual branch per sample with
    probability ``p`` in training and rescales the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (timm ``Mlp`` names: ``fc1``, ``fc2``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (with bias) and ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        # [B, L, 3D] -> [3, B, heads, L, D / heads]
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, D / heads]
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x += DropPath(MHSA(LN x)); x += DropPath(MLP(LN x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: images [B, C, H, W] -> tokens [B, h·w, D] in
    raster order (h = H / patch, w = W / patch); any size that is a multiple of the patch."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) of an input of ``height`` × ``width`` pixels."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {p}")
        return height // p, width // p

    def forward(self, x: Tensor) -> Tensor:
        self.grid(x.shape[-2], x.shape[-1])
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, h·w, D]


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> Tensor:
    """MAE's fixed 2-D sin-cos table, float32 ``[(1 +) grid_h·grid_w, dim]`` (raster order).

    Dims ``[0, dim/2)`` encode the column c and ``[dim/2, dim)`` the row r; each half is
    ``[sin(p·ω_k)]_k`` followed by ``[cos(p·ω_k)]_k`` with ω_k = 10000^(-k / (dim/4)), k < dim/4.
    With ``cls_token`` a zero row comes first.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # [dim/4]
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )

    def half(pos: Tensor) -> Tensor:  # [h·w] positions -> [h·w, dim/2]
        angles = pos[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([half(cols.flatten()), half(rows.flatten())], dim=1)  # [h·w, dim]
    if cls_token:
        table = torch.cat([table.new_zeros(1, dim), table], dim=0)
    return table.float()


def resize_pos_embed(pos: Tensor, grid: int, height: int, width: int) -> Tensor:
    """Resize a ``[1, 1 + grid², D]`` table (cls slot kept) to ``[1, 1 + height·width, D]``,
    bicubic with align_corners=False in fp32; the values are unchanged when the grid is."""
    return _resize_square_table(pos[0], grid, height, width)[None]
