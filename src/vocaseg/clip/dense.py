"""Dense (per-patch) CLIP features at any resolution, for training-free segmentation.

docs/methods/maskclip.md §2-§4 and §6. MaskCLIP (Zhou et al., ECCV 2022, "Extract Free Dense
Labels from CLIP") replaces the attention of the last ViT block by the identity, so each patch keeps
its own value vector; SCLIP (``csa``), ClearCLIP (``qq``, no residual/FFN) and NACLIP (``naclip``,
no residual/FFN) swap in other attention matrices. The ResNet path reads CLIP's attention pool as
1×1 convolutions. Key smoothing and prompt denoising are MaskCLIP's optional refinements.

Everything here reads weights from ``vocaseg.clip.model`` modules; nothing holds parameters.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Attention = Literal["identity", "csa", "qq", "naclip", "kk", "vanilla"]
ATTENTIONS: tuple[str, ...] = ("identity", "csa", "qq", "naclip", "kk", "vanilla")


class DenseOutput(NamedTuple):
    """``features`` [B, D, h, w] L2-normalised (float32, or float64 for a float64 model);
    ``keys`` [B, h*w, C] or None."""

    features: Tensor
    keys: Tensor | None


# ---------------------------------------------------------------------------------------------
# ViT: last-block variants


@functools.lru_cache(maxsize=32)
def neighbourhood_bias(h: int, w: int, std: float) -> Tensor:
    """NACLIP's Gaussian Ω [1 + h*w, 1 + h*w] (float64, CPU): exp(-|u_i - u_j|² / 2σ²) between
    patch grid coordinates u = (row, col); zero on the class-token row and column."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()  # [N, 2]
    dist2 = torch.cdist(coords, coords).pow(2)
    bias = torch.zeros(h * w + 1, h * w + 1, dtype=torch.float64)
    bias[1:, 1:] = torch.exp(-dist2 / (2 * std**2))
    return bias


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def attention_weights(
    q: Tensor, k: Tensor, attn: Attention, grid: tuple[int, int], gaussian_std: float = 5.0
) -> Tensor:
    """Attention matrix A [B, heads, N+1, N+1] of a last-layer variant (docs/methods/maskclip.md
    §3), computed in float32 (float64 for float64 inputs) whatever autocast the caller runs under.

    ``q``, ``k``: [B, heads, N+1, d] with the class token first; ``grid`` = (h, w).
    """
    if attn not in ATTENTIONS:
        raise ValueError(f"unknown attention {attn!r}; choose from {', '.join(ATTENTIONS)}")
    scale = q.shape[-1] ** -0.5
    q, k = _at_least_fp32(q), _at_least_fp32(k)
    if attn == "identity":
        eye = torch.eye(q.shape[-2], dtype=q.dtype, device=q.device)
        return eye.expand(*q.shape[:2], -1, -1)

    def softmax_gram(a: Tensor, b: Tensor, bias: Tensor | float = 0.0) -> Tensor:
        return torch.softmax(scale * a @ b.transpose(-1, -2) + bias, dim=-1)

    with torch.autocast(q.device.type, enabled=False):  # bf16 logits would round by ~1%
        if attn == "vanilla":
            return softmax_gram(q, k)
        if attn == "qq":
            return softmax_gram(q, q)
        if attn == "kk":
            return softmax_gram(k, k)
        if attn == "csa":  # rows sum to 2, not renormalised (SCLIP)
            return softmax_gram(q, q) + softmax_gram(k, k)
        # naclip
        omega = neighbourhood_bias(grid[0], grid[1], float(gaussian_std))
        return softmax_gram(k, k, omega.to(device=q.device, dtype=q.dtype))


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)  # [B, N, C] -> [B, heads, N, d]


def _merge_heads(x: Tensor) -> Tensor:
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)  # [B, heads, N, d] -> [B, N, C]


def apply_attention(attn: nn.Module, y: Tensor, weights: Tensor) -> Tensor:
    """Out-projected A·V for an explicit A [B, heads, N+1, N+1] and normed tokens ``y`` [B, N+1, C]."""
    _, _, w_v = attn.in_proj_weight.chunk(3)
    _, _, b_v = attn.in_proj_bias.chunk(3)
    v = _split_heads(F.linear(y, w_v, b_v), attn.num_heads)
    return attn.out_proj(_merge_heads(weights.to(v.dtype) @ v))


def last_block(
    block: nn.Module,
    x: Tensor,
    attn: Attention = "identity",
    residual: bool = True,
    ffn: bool = True,
    grid: tuple[int, int] = (1, 1),
    gaussian_std: float = 5.0,
    return_keys: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run the modified last ViT block on its input ``x`` [B, N+1, C]
    (docs/methods/maskclip.md §2, step 4).

    Returns Z [B, N+1, C] and, with ``return_keys``, the out-projected keys of the patch tokens
    [B, N, C] (key smoothing, docs/methods/maskclip.md §6).
    """
    module = block.attn
    y = block.ln_1(x)
    w_q, w_k, w_v = module.in_proj_weight.chunk(3)
    b_q, b_k, b_v = module.in_proj_bias.chunk(3)
    if attn == "identity":  # A = I: each token keeps its own value, no heads needed
        out = module.out_proj(F.linear(y, w_v, b_v))
    elif attn == "vanilla":
        q, k, v = (
            _split_heads(F.linear(y, w, b), module.num_heads)
            for w, b in ((w_q, b_q), (w_k, b_k), (w_v, b_v))
        )
        out = module.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
    else:
        q = _split_heads(F.linear(y, w_q, b_q), module.num_heads)
        k = _split_heads(F.linear(y, w_k, b_k), module.num_heads)
        out = apply_attention(module, y, attention_weights(q, k, attn, grid, gaussian_std))
    z = out + x if residual else out
    if ffn:
        z = z + block.mlp(block.ln_2(z))
    keys = module.out_proj(F.linear(y[:, 1:], w_k, b_k)) if return_keys else None
    return z, keys


def vit_dense_features(
    visual: nn.Module,
    images: Tensor,
    attn: Attention = "identity",
    residual: bool = True,
    ffn: bool = True,
    gaussian_std: float = 5.0,
    return_keys: bool = False,
) -> DenseOutput:
    """Projected, L2-normalised patch features of a CLIP ViT for normalised ``images`` [B, 3, H, W].

    The token grid is (H // p, W // p); a remainder is ignored by the stride-p patch convolution.
    """
    blocks = visual.transformer.resblocks
    h, w = images.shape[-2] // visual.patch_size, images.shape[-1] // visual.patch_size
    if len(blocks) == 1:
        x = visual.embed(images)
    else:
        x = visual.forward_features(images, return_layers=(-2,))[0]  # input of the last block
    z, keys = last_block(blocks[-1], x, attn, residual, ffn, (h, w), gaussian_std, return_keys)
    feats = visual.ln_post(z[:, 1:]) @ visual.proj  # [B, N, D]
    feats = F.normalize(_at_least_fp32(feats), dim=-1)
    # [B, h*w, D] -> [B, D, h, w], row-major patches
    feats = feats.transpose(1, 2).reshape(feats.shape[0], -1, h, w)
    return DenseOutput(feats, keys)


# ---------------------------------------------------------------------------------------------
# ResNet


def rn_dense_features(
    visual: nn.Module, images: Tensor, dense_attnpool: bool = False, return_keys: bool = False
) -> DenseOutput:
    """L2-normalised dense features [B, D, H/32, W/32] of a CLIP ModifiedResNet
    (docs/methods/maskclip.md §4).

    Default (MaskCLIP): the attention pool's ``v_proj`` and ``c_proj`` as 1×1 convolutions.
    ``dense_attnpool``: every spatial token (plus a prepended mean token) is a query of the pool's
    multi-head attention, without positional embedding; the mean token is dropped.
    """
    x = visual.forward_features(images)["res5"]  # [B, C, h, w]
    b, _, h, w = x.shape
    pool = visual.attnpool
    tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
    if dense_attnpool:
        seq = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # [B, 1+N, C]
        q, k, v = (
            _split_heads(proj(seq), pool.num_heads)
            for proj in (pool.q_proj, pool.k_proj, pool.v_proj)
        )
        feats = pool.c_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))[:, 1:]
    else:
        feats = pool.c_proj(pool.v_proj(tokens))
    feats = F.normalize(_at_least_fp32(feats), dim=-1)
    keys = pool.k_proj(tokens) if return_keys else None
    # [B, h*w, D] -> [B, D, h, w]
    return DenseOutput(feats.transpose(1, 2).reshape(b, -1, h, w), keys)


def dense_features(
    clip: nn.Module,
    images: Tensor,
    attn: Attention = "identity",
    residual: bool = True,
    ffn: bool = True,
    gaussian_std: float = 5.0,
    rn_dense_attnpool: bool = False,
    return_keys: bool = False,
) -> DenseOutput:
    """Dense features of any CLIP (ViT or ResNet) for normalised ``images`` [B, 3, H, W]."""
    images = images.to(clip.visual.conv1.weight.dtype)
    if hasattr(clip.visual, "transformer"):
        return vit_dense_features(
            clip.visual, images, attn, residual, ffn, gaussian_std, return_keys
        )
    return rn_dense_features(clip.visual, images, rn_dense_attnpool, return_keys)


# ---------------------------------------------------------------------------------------------
# MaskCLIP refinements (docs/methods/maskclip.md §6), on cosine scores at feature resolution


def prompt_denoise(scores: Tensor, thresh: float, scale: float = 100.0) -> Tensor:
    """Set the scores [B, Q, h, w] of every query whose best probability anywhere is below
    ``thresh`` to -100 (probabilities: softmax of ``scale`` · scores over queries)."""
    if thresh <= 0:
        return scores
    probs = torch.softmax(scale * scores.float(), dim=1)
    weak = probs.amax(dim=(2, 3)) < thresh  # [B, Q]
    return scores.masked_fill(weak[:, :, None, None], -100.0)


def key_smooth(
    scores: Tensor,
    keys: Tensor,
    thresh: float,
    key_norm: Literal["channel", "token"] = "channel",
    scale: float = 100.0,
) -> Tensor:
    """Key smoothing: probabilities [B, Q, h, w], where positions whose best probability is below
    ``thresh`` take the key-affinity-weighted sum of all positions' probabilities.

    ``keys`` [B, h*w, C]. ``key_norm="channel"``: cosine between tokens; ``"token"``: each channel
    normalised over the tokens (the reference code). The output is not renormalised.
    """
    b, q, h, w = scores.shape
    probs = torch.softmax(scale * scores.float(), dim=1).flatten(2).transpose(1, 2)  # [B, N, Q]
    normed = F.normalize(keys.float(), dim=-1 if key_norm == "channel" else 1)
    affinity = normed @ normed.transpose(1, 2)  # [B, N, N]
    smooth = probs.amax(dim=-1, keepdim=True) < thresh  # [B, N, 1]
    out = torch.where(smooth, affinity @ probs, probs)
    # [B, N, Q] -> [B, Q, h, w]
    return out.transpose(1, 2).reshape(b, q, h, w)
