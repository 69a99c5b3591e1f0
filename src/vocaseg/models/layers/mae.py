"""Masked-autoencoder pieces (He et al., "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022, §3; facebookresearch/mae ``models_mae.py``), as ZeroSeg's student uses them
(Chen et al., ICCV 2023, §3.2):

- ``random_masking``: per-sample shuffle, keep the first int(N·(1 − ratio)) tokens;
- ``patchify`` / ``unpatchify``: images <-> per-patch pixel vectors in (row, col, py, px, channel)
  order, the reconstruction target layout;
- ``MaeEncoder`` and ``MaeDecoder``: the ViT encoder and the reconstruction decoder, with MAE's
  state-dict names (encoder: ``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``, ``norm``;
  decoder: ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``,
  ``decoder_norm``, ``decoder_pred``; the two sets are disjoint) and MAE's initialisation;
- ``load_mae_state_dict``: an MAE checkpoint (encoder-only or with the decoder) into both.

The positional tables are fixed sin-cos buffers (MAE keeps them as frozen parameters); they are in
the state dict under MAE's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vocaseg.errors import CheckpointError
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


class MaeEncoder(nn.Module):
    """MAE ViT encoder: patch embedding + fixed sin-cos positions, random masking, cls token,
    ``depth`` pre-norm blocks, final LayerNorm (LN eps 1e-6, no drop path, as MAE).

    At another input size the table is resized bicubically (``pos_embed_resize="bicubic"``) or
    regenerated at the new grid (``"regenerate"``).
    """

    def __init__(
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
        super().__init__()
        if pos_embed_resize not in POS_EMBED_RESIZE:
            raise ValueError(f"pos_embed_resize must be one of {POS_EMBED_RESIZE}")
        self.dim = dim
        self.grid_size = img_size // patch_size
        self.pos_embed_resize = pos_embed_resize
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        table = sincos_pos_embed_2d(dim, self.grid_size, self.grid_size)
        self.register_buffer("pos_embed", table[None])  # [1, 1 + g², D]
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, eps=eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        init_mae_weights(self)
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))  # as a Linear over C·p·p
        nn.init.normal_(self.cls_token, std=0.02)

    def positions(self, height: int, width: int) -> Tensor:
        """The table for an ``height`` × ``width`` token grid: [1, 1 + height·width, D]."""
        if (height, width) == (self.grid_size, self.grid_size):
            return self.pos_embed
        if self.pos_embed_resize == "regenerate":
            table = sincos_pos_embed_2d(self.dim, height, width)[None]
            return table.to(self.pos_embed.device, self.pos_embed.dtype)
        return resize_pos_embed(self.pos_embed, self.grid_size, height, width)

    def forward(
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


class MaeDecoder(nn.Module):
    """MAE reconstruction decoder: ``decoder_embed`` -> one shared ``mask_token`` per removed patch
    -> unshuffle -> + fixed sin-cos ``decoder_pos_embed`` -> blocks -> ``decoder_norm`` ->
    ``decoder_pred`` (p·p·C pixel values per patch), cls dropped."""

    def __init__(
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
        super().__init__()
        self.decoder_embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        table = sincos_pos_embed_2d(dim, grid_size, grid_size)
        self.register_buffer("decoder_pos_embed", table[None])  # [1, 1 + g², D_dec]
        self.decoder_blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, eps=eps) for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=eps)
        self.decoder_pred = nn.Linear(dim, patch_size * patch_size * in_chans)
        init_mae_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
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


@dataclass
class MaeLoadReport:
    """What :func:`load_mae_state_dict` did: keys copied, keys of the modules left at their
    initialisation, and checkpoint keys that belong to neither module (e.g. a classifier head)."""

    loaded: list[str]
    left_at_init: list[str]
    unexpected: list[str]

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")

        line = f"loaded {len(self.loaded)} MAE tensors"
        if self.left_at_init:
            line += f"; left at init: {len(self.left_at_init)} ({few(self.left_at_init)})"
        if self.unexpected:
            line += f"; ignored: {len(self.unexpected)} ({few(self.unexpected)})"
        return line


def load_mae_state_dict(
    checkpoint: Mapping[str, object], encoder: MaeEncoder, decoder: MaeDecoder | None = None
) -> MaeLoadReport:
    """Copy an MAE state dict (or a checkpoint holding it under ``"model"``) into ``encoder`` and
    ``decoder``. Encoder-only checkpoints leave the decoder at init; a wrong shape or a dict
    without any encoder key is a :class:`CheckpointError`."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError("the MAE checkpoint holds no state dict; pass MAE's .pth file")
    modules = [m for m in (encoder, decoder) if m is not None]
    targets = {k: (m, v) for m in modules for k, v in m.state_dict().items()}
    if not any(k in state for k in encoder.state_dict()):
        raise CheckpointError(
            f"not an MAE checkpoint: none of its {len(state)} keys (e.g. {next(iter(state), '-')}) "
            "is an MAE encoder key such as 'blocks.0.attn.qkv.weight'; pass an MAE pretraining file"
        )
    per_module: dict[int, dict[str, Tensor]] = {id(m): {} for m in modules}
    for key, value in state.items():
        if key not in targets:
            continue
        module, current = targets[key]
        if tuple(value.shape) != tuple(current.shape):
            raise CheckpointError(
                f"MAE checkpoint key {key} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(current.shape)}; build the student with the checkpoint's width/patch/size"
            )
        per_module[id(module)][key] = value
    for module in modules:
        module.load_state_dict(per_module[id(module)], strict=False)
    loaded = [k for k in targets if k in state]
    return MaeLoadReport(
        loaded=loaded,
        left_at_init=[k for k in targets if k not in state],
        unexpected=[k for k in state if k not in targets],
    )
