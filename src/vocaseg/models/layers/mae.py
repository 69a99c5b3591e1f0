"""Masked-autoencoder pieces (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, §3; facebookresearch/mae ``models_mae.py``), as ZeroSeg's student uses them
(Chen et al., ICCV 2023, §3.2):

- ``random_masking``: per-sample shuffle, keep the first int(N·(1 − ratio)) tokens;
- ``patchify`` / ``unpatchify``: images <-> per-patch pixel vectors in (row, col, py, px, channel)
  order, the reconstruction target layout;
- ``MaeEncoderMixin`` and ``MaeDecoderMixin``: the ViT encoder and the reconstruction decoder,
  built directly on the module that mixes them in, so MAE's state-dict names stay at its top
  level (encoder: ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``, ``norm``; decoder:
  ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``,
  ``decoder_pred``; the two sets are disjoint) and an MAE checkpoint's ``model`` dict loads into
  it through the weights door (``vocaseg.models.weights``); ``MaeEncoder`` and ``MaeDecoder`` are
  each alone as a module.

The positional tables are fixed sin-cos buffers (MAE keeps them as frozen parameters); they are in
the state dict under MAE's names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vocaseg.models.layers.vit import Block, PatchEmbed, resize_pos_embed, sincos_pos_embed_2d

POS_EMBED_RESIZE = ("bicubic", "regenerate")


def random_masking(
    x: Tensor, ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random subset of int(N·(1 − ratio)) tokens of ``x`` [B, N, D] per sample.

    Returns ``kept`` [B, N_vis, D] (in shuffled order), ``mask`` [B, N] (1 = removed, raster
    order, dtype of ``x``) and ``ids_restore`` [B, N], the permutation that unshuffles
    ``cat([kept, removed])`` back to raster order.
    """
    batch, length, dim = x.shape
    keep = int(length * (1 - ratio))
    noise = torch.rand(batch, length, device=x.device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)  # ascending noise: the first ``keep`` are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = x.gather(1, ids_keep[..., None].expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    return kept, mask.gather(1, ids_restore), ids_restore


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Images [B, C, H, W] -> patches [B, h·w, p·p·C], each vector in (py, px, channel) order."""
    batch, chans, height, width = images.shape
    h, w, p = height // patch_size, width // patch_size, patch_size
    x = images.reshape(batch, chans, h, p, w, p)  # [B, C, h, py, w, px]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [B, h, w, py, px, C]
    return x.reshape(batch, h * w, p * p * chans)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int] | None = None) -> Tensor:
    """Inverse of :func:`patchify`; ``grid`` (h, w) defaults to a square one."""
    batch, length, size = patches.shape
    p = patch_size
    chans = size // (p * p)
    h, w = grid or (int(length**0.5),) * 2
    x = patches.reshape(batch, h, w, p, p, chans).permute(0, 5, 1, 3, 2, 4)  # [B, C, h, py, w, px]
    return x.reshape(batch, chans, h * p, w * p)


def init_mae_weights(module: nn.Module) -> None:
    """MAE's scheme: xavier-uniform Linear weights and zero biases, unit/zero LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass
class MaskedTokens:
    """Encoder output: ``tokens`` [B, 1 + N_vis, D] (cls first), ``mask`` [B, N] (1 = removed),
    ``ids_restore`` [B, N] and the token ``grid`` (h, w) with N = h·w."""

    tokens: Tensor
    mask: Tensor
    ids_restore: Tensor
    grid: tuple[int, int]


class MaeEncoderMixin:
    """The MAE ViT encoder's parts and logic, set directly on the module that mixes it in, so
    their state-dict names (``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``, ``norm``)
    stay at that module's top level: patch embedding + fixed sin-cos positions, random masking,
    cls token, ``depth`` pre-norm blocks, final LayerNorm (LN eps 1e-6, no drop path, as MAE).

    At another input size the table is resized bicubically (``pos_embed_resize="bicubic"``) or
    regenerated at the new grid (``"regenerate"``).
    """

    def build_encoder(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        eps: float = 1e-6,
        pos_embed_resize: str = "bicubic",
    ) -> None:
        """Create the encoder's parts on ``self`` (an ``nn.Module``) with MAE's initialisation."""
        if pos_embed_resize not in POS_EMBED_RESIZE:
            raise ValueError(f"pos_embed_resize must be one of {POS_EMBED_RESIZE}")
        self.encoder_dim = dim
        self.grid_size = img_size // patch_size
        self.pos_embed_resize = pos_embed_resize
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        table = sincos_pos_embed_2d(dim, self.grid_size, self.grid_size)
        self.register_buffer("pos_embed", table[None])  # [1, 1 + g², D]
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, eps=eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        for part in (self.patch_embed, self.blocks, self.norm):
            init_mae_weights(part)
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))  # as a Linear over C·p·p
        nn.init.normal_(self.cls_token, std=0.02)

    def positions(self, height: int, width: int) -> Tensor:
        """The table for an ``height`` × ``width`` token grid: [1, 1 + height·width, D]."""
        if (height, width) == (self.grid_size, self.grid_size):
            return self.pos_embed
        if self.pos_embed_resize == "regenerate":
            table = sincos_pos_embed_2d(self.encoder_dim, height, width)[None]
            return table.to(self.pos_embed.device, self.pos_embed.dtype)
        return resize_pos_embed(self.pos_embed, self.grid_size, height, width)

    def encode(
        self, images: Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> MaskedTokens:
        """Encode ``images`` [B, 3, H, W] with ``mask_ratio`` of the patches removed.

        With ``mask_ratio == 0`` nothing is shuffled: tokens stay in raster order and
        ``ids_restore`` is the identity (MAE would still permute them).
        """
        grid = self.patch_embed.grid(images.shape[-2], images.shape[-1])
        pos = self.positions(*grid)
        x = self.patch_embed(images) + pos[:, 1:]  # [B, N, D]
        batch, length, _ = x.shape
        if mask_ratio > 0:
            x, mask, ids_restore = random_masking(x, mask_ratio, generator)  # [B, N_vis, D]
        else:
            mask = x.new_zeros(batch, length)
            ids_restore = torch.arange(length, device=x.device).expand(batch, -1)
        cls = (self.cls_token + pos[:, :1]).expand(batch, -1, -1)  # [B, 1, D]
        x = torch.cat([cls, x], dim=1)  # [B, 1 + N_vis, D]
        for block in self.blocks:
            x = block(x)
        return MaskedTokens(self.norm(x), mask, ids_restore, grid)


class MaeDecoderMixin:
    """The MAE reconstruction decoder's parts and logic, set directly on the module that mixes it
    in (names ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``,
    ``decoder_norm``, ``decoder_pred``): ``decoder_embed`` -> one shared ``mask_token`` per
    removed patch -> unshuffle -> + fixed sin-cos ``decoder_pos_embed`` -> blocks ->
    ``decoder_norm`` -> ``decoder_pred`` (p·p·C pixel values per patch), cls dropped."""

    def build_decoder(
        self,
        grid_size: int = 14,
        patch_size: int = 16,
        in_chans: int = 3,
        encoder_dim: int = 768,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        eps: float = 1e-6,
    ) -> None:
        """Create the decoder's parts on ``self`` (an ``nn.Module``) with MAE's initialisation."""
        self.decoder_embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        table = sincos_pos_embed_2d(dim, grid_size, grid_size)
        self.register_buffer("decoder_pos_embed", table[None])  # [1, 1 + g², D_dec]
        self.decoder_blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, eps=eps) for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=eps)
        self.decoder_pred = nn.Linear(dim, patch_size * patch_size * in_chans)
        for part in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_mae_weights(part)
        nn.init.normal_(self.mask_token, std=0.02)

    def decode(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        """Encoder ``tokens`` [B, 1 + N_vis, D_enc] -> predicted patches [B, N, p·p·C]."""
        x = self.decoder_embed(tokens)  # [B, 1 + N_vis, D_dec]
        batch, visible, dim = x.shape
        length = ids_restore.shape[1]
        if length + 1 != self.decoder_pos_embed.shape[1]:
            raise ValueError(
                f"the decoder was built for {self.decoder_pos_embed.shape[1] - 1} patches, got {length}"
            )
        masked = self.mask_token.expand(batch, length + 1 - visible, -1)
        body = torch.cat([x[:, 1:], masked], dim=1)  # [B, N, D_dec], shuffled order
        body = body.gather(1, ids_restore[..., None].expand(-1, -1, dim))  # raster order
        x = torch.cat([x[:, :1], body], dim=1) + self.decoder_pos_embed  # [B, 1 + N, D_dec]
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class MaeEncoder(MaeEncoderMixin, nn.Module):
    """The encoder alone as a module: ``forward`` is :meth:`MaeEncoderMixin.encode`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.build_encoder(*args, **kwargs)

    def forward(
        self, images: Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> MaskedTokens:
        return self.encode(images, mask_ratio, generator)


class MaeDecoder(MaeDecoderMixin, nn.Module):
    """The decoder alone as a module: ``forward`` is :meth:`MaeDecoderMixin.decode`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.build_decoder(*args, **kwargs)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        return self.decode(tokens, ids_restore)
