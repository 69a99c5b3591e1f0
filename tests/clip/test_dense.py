"""Dense CLIP features (docs/methods/maskclip.md §11): independent recomputation from
state-dict tensors, the vanilla round-trip, attention variants, ResNet paths, KS/PD."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vocaseg.clip.dense import (
    apply_attention,
    attention_weights,
    dense_features,
    key_smooth,
    last_block,
    neighbourhood_bias,
    prompt_denoise,
    rn_dense_features,
)


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _reference_maskclip(sd, x, residual, ffn, heads_last="visual.transformer.resblocks.1."):
    """The last layer of MaskCLIP from state-dict tensors alone (maskclip.md §11, 1)."""
    c = x.shape[-1]
    p = heads_last
    y = F.layer_norm(x, (c,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
    w_v = sd[p + "attn.in_proj_weight"][2 * c :]
    b_v = sd[p + "attn.in_proj_bias"][2 * c :]
    v = y @ w_v.T + b_v
    z = v @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
    if residual:
        z = z + x
    if ffn:
        y2 = F.layer_norm(z, (c,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        hidden = _quick_gelu(y2 @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
        z = z + hidden @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    z = F.layer_norm(z, (c,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5)
    f = z[:, 1:] @ sd["visual.proj"]  # [B, N, D]
    return F.normalize(f, dim=-1)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("residual,ffn", list(itertools.product([True, False], repeat=2)))
def test_identity_path_matches_independent_computation(tiny_vit_clip, dtype, atol, residual, ffn):
    clip = tiny_vit_clip.to(dtype)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 48, 80, dtype=dtype)  # 3x5 grid: pos-embed resized from 2x2
    text = F.normalize(torch.randn(4, clip.config.embed_dim, dtype=dtype), dim=-1)
    with torch.no_grad():
        x = clip.visual.forward_features(images, return_layers=(0,))[0]  # output of block 1 of 2
        ref = _reference_maskclip(clip.state_dict(), x, residual, ffn)  # [B, N, D]
        ref = ref.view(2, 3, 5, -1).permute(0, 3, 1, 2)  # row-major -> [B, D, h, w]
        out = dense_features(clip, images, "identity", residual, ffn).features
    assert out.shape == (2, clip.config.embed_dim, 3, 5)
    assert torch.allclose(out.to(dtype), ref, atol=atol, rtol=0)
    scores = torch.einsum("bdhw,qd->bqhw", out.to(dtype), text)
    ref_scores = torch.einsum("bdhw,qd->bqhw", ref, text)
    assert torch.allclose(scores, ref_scores, atol=atol, rtol=0)


def test_rows_and_columns_follow_the_positional_grid(tiny_vit_clip):
    """Patch tokens carry only a positional embedding that varies by row: features are constant
    along each row of the [h, w] map and differ between rows."""
    clip = tiny_vit_clip.double()
    with torch.no_grad():
        clip.visual.conv1.weight.zero_()
        grid = clip.visual.grid_size
        pos = torch.zeros(
            grid, grid, clip.visual.positional_embedding.shape[1], dtype=torch.float64
        )
        pos += torch.arange(grid, dtype=torch.float64).view(grid, 1, 1) * torch.linspace(
            -1, 1, pos.shape[-1], dtype=torch.float64
        )
        clip.visual.positional_embedding[1:] = pos.reshape(grid * grid, -1)
        feats = dense_features(clip, torch.randn(1, 3, 48, 80, dtype=torch.float64)).features
    # (the grid resize runs in fp32, docs/methods/maskclip.md §2)
    assert torch.allclose(feats, feats[..., :1].expand_as(feats), atol=1e-6)
    assert (feats[0, :, 0, 0] - feats[0, :, 2, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_vanilla_last_block_reproduces_encode_image(tiny_vit_clip, size):
    clip = tiny_vit_clip
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        x = clip.visual.forward_features(images, return_layers=(-2,))[0]
        z, _ = last_block(clip.visual.transformer.resblocks[-1], x, "vanilla", True, True)
        pooled = clip.visual.ln_post(z[:, 0]) @ clip.visual.proj
        expected = clip.encode_image(images)
    assert torch.allclose(pooled, expected, atol=1e-5)


def _softmax_rows(logits):
    """Softmax by explicit sums over each row (no torch.softmax)."""
    out = torch.empty_like(logits)
    for i in range(logits.shape[0]):
        exps = [math.exp(float(v)) for v in logits[i]]
        total = sum(exps)
        out[i] = torch.tensor([e / total for e in exps], dtype=logits.dtype)
    return out


def _brute_force(q, k, kind, h, w, std):
    s = q.shape[-1] ** -0.5
    gram = lambda a, b: torch.tensor(
        [[float(a[i] @ b[j]) * s for j in range(b.shape[0])] for i in range(a.shape[0])],
        dtype=torch.float64,
    )
    if kind == "csa":
        return _softmax_rows(gram(q, q)) + _softmax_rows(gram(k, k))
    if kind == "qq":
        return _softmax_rows(gram(q, q))
    if kind == "kk":
        return _softmax_rows(gram(k, k))
    omega = torch.zeros(1 + h * w, 1 + h * w, dtype=torch.float64)
    for r1, c1, r2, c2 in itertools.product(range(h), range(w), range(h), range(w)):
        dist2 = (r1 - r2) ** 2 + (c1 - c2) ** 2
        omega[1 + r1 * w + c1, 1 + r2 * w + c2] = math.exp(-dist2 / (2 * std**2))
    return _softmax_rows(gram(k, k) + omega)


@pytest.mark.parametrize("kind", ["csa", "qq", "kk", "naclip"])
def test_attention_variants_match_brute_force(kind):
    torch.manual_seed(0)
    h, w, std = 2, 3, 1.5
    q, k = torch.randn(2, 1, 2, 1 + h * w, 8, dtype=torch.float64).unbind(0)
    weights = attention_weights(q, k, kind, (h, w), std)
    expected = _brute_force(q[0, 0], k[0, 0], kind, h, w, std)
    assert weights.dtype == torch.float64  # float64 in, float64 out (not rounded to float32)
    assert torch.allclose(weights[0, 0], expected, rtol=0, atol=1e-12)
    row_sums = weights.sum(-1)
    assert torch.allclose(row_sums, torch.full_like(row_sums, 2.0 if kind == "csa" else 1.0))


@pytest.mark.parametrize("kind", ["csa", "qq", "kk", "naclip", "vanilla"])
def test_attention_logits_stay_float32_under_autocast(kind):
    # bf16 has 8 mantissa bits: logits near 30 would round by 0.125 before the softmax.
    torch.manual_seed(0)
    q, k = 3 * torch.randn(2, 1, 2, 13, 16)  # [B, heads, 1 + 3*4, d] each
    expected = attention_weights(q, k, kind, (3, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = attention_weights(q, k, kind, (3, 4))
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, expected, atol=1e-6)


def test_neighbourhood_bias_double_loop():
    h, w, std = 3, 4, 5.0
    omega = neighbourhood_bias(h, w, std)
    assert omega.shape == (13, 13)
    assert omega[0].abs().sum() == 0 and omega[:, 0].abs().sum() == 0
    for i, j in itertools.product(range(h * w), repeat=2):
        (r1, c1), (r2, c2) = divmod(i, w), divmod(j, w)
        expected = math.exp(-((r1 - r2) ** 2 + (c1 - c2) ** 2) / (2 * std**2))
        assert abs(float(omega[1 + i, 1 + j]) - expected) < 1e-6


@pytest.mark.parametrize("residual,ffn", [(True, True), (False, False)])
def test_identity_equals_generic_attention_with_identity_matrix(tiny_vit_clip, residual, ffn):
    block = tiny_vit_clip.visual.transformer.resblocks[-1]
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        fast, _ = last_block(block, x, "identity", residual, ffn)
        eye = torch.eye(7).expand(2, block.attn.num_heads, 7, 7)
        generic = apply_attention(block.attn, block.ln_1(x), eye)
        generic = generic + x if residual else generic
        if ffn:
            generic = generic + block.mlp(block.ln_2(generic))
    assert torch.allclose(fast, generic, atol=1e-5)


def test_other_variants_use_their_attention_matrix(tiny_vit_clip):
    """``last_block`` with ``qq`` equals ``apply_attention`` fed the ``qq`` matrix by hand."""
    block = tiny_vit_clip.visual.transformer.resblocks[-1]
    x = torch.randn(1, 7, 64)
    with torch.no_grad():
        out, _ = last_block(block, x, "qq", residual=False, ffn=False, grid=(2, 3))
        y = block.ln_1(x)
        q = (y @ block.attn.in_proj_weight[:64].T + block.attn.in_proj_bias[:64]).view(1, 7, 4, 16)
        q = q.transpose(1, 2)
        weights = torch.softmax(q @ q.transpose(-1, -2) / 4.0, dim=-1)
        expected = apply_attention(block.attn, y, weights)
    assert torch.allclose(out, expected, atol=1e-5)


def test_resnet_dense_features_are_the_pool_value_path(tiny_rn_clip):
    clip = tiny_rn_clip.double()
    images = torch.randn(2, 3, 96, 64, dtype=torch.float64)
    sd = clip.state_dict()
    with torch.no_grad():
        x = clip.visual.forward_features(images)["res5"]  # [B, C, 3, 2]
        out = rn_dense_features(clip.visual, images).features
    v = torch.einsum("oc,bchw->bohw", sd["visual.attnpool.v_proj.weight"], x)
    v = v + sd["visual.attnpool.v_proj.bias"].view(1, -1, 1, 1)
    f = torch.einsum("oc,bchw->bohw", sd["visual.attnpool.c_proj.weight"], v)
    f = f + sd["visual.attnpool.c_proj.bias"].view(1, -1, 1, 1)
    assert out.shape == (2, clip.config.embed_dim, 3, 2)
    assert torch.allclose(out.double(), F.normalize(f, dim=1), atol=1e-10)


def test_resnet_dense_attnpool_is_multihead_attention_without_pos_embed(tiny_rn_clip):
    clip = tiny_rn_clip.double()
    pool = clip.visual.attnpool
    images = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        x = clip.visual.forward_features(images)["res5"]
        out = rn_dense_features(clip.visual, images, dense_attnpool=True).features
        tokens = x.flatten(2)[0].T  # [N, C]
        seq = torch.cat([tokens.mean(0, keepdim=True), tokens])  # [1+N, C]
        q, k, v = pool.q_proj(seq), pool.k_proj(seq), pool.v_proj(seq)
        d = seq.shape[1] // pool.num_heads
        heads = []
        for head in range(pool.num_heads):
            sl = slice(head * d, (head + 1) * d)
            attn = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
            heads.append(attn @ v[:, sl])
        expected = F.normalize(pool.c_proj(torch.cat(heads, dim=1))[1:], dim=-1)  # [N, D]
    assert torch.allclose(out[0].flatten(1).T.double(), expected, atol=1e-10)


def test_zero_thresholds_change_nothing():
    scores = torch.randn(2, 4, 3, 5)
    keys = torch.randn(2, 15, 8)
    assert torch.equal(prompt_denoise(scores, 0.0), scores)
    probs = torch.softmax(100 * scores, dim=1)
    assert torch.allclose(key_smooth(scores, keys, 0.0), probs)


def test_prompt_denoising_removes_exactly_the_weak_queries():
    torch.manual_seed(0)
    scores = torch.randn(1, 5, 4, 4) * 0.05
    peak = torch.softmax(100 * scores, dim=1).amax(dim=(2, 3))[0]  # [Q]
    tau = float(peak.sort().values[2])  # the two weakest fall below
    out = prompt_denoise(scores, tau)
    removed = (out[0] == -100).all(dim=(1, 2))
    assert torch.equal(removed, peak < tau)
    assert int(removed.sum()) == 2
    assert torch.equal(out[0, ~removed], scores[0, ~removed])


def test_identical_keys_smooth_every_row_to_the_column_sums():
    scores = torch.randn(1, 3, 2, 4) * 0.05
    keys = torch.randn(1, 1, 6).expand(1, 8, 6)
    out = key_smooth(scores, keys, thresh=1.01)  # every position is below 1.01
    probs = torch.softmax(100 * scores, dim=1).flatten(2)  # [1, Q, N]
    column_sums = probs.sum(dim=-1, keepdim=True).expand_as(probs)
    assert torch.allclose(out.flatten(2), column_sums, atol=1e-5)


def test_token_key_norm_normalises_each_channel_over_tokens():
    scores = torch.randn(1, 3, 2, 2)
    keys = torch.randn(1, 4, 5)
    out = key_smooth(scores, keys, thresh=1.01, key_norm="token")
    normed = keys / keys.norm(dim=1, keepdim=True)
    probs = torch.softmax(100 * scores, dim=1).flatten(2).transpose(1, 2)
    expected = (normed @ normed.transpose(1, 2)) @ probs
    assert torch.allclose(out.flatten(2).transpose(1, 2), expected, atol=1e-5)
