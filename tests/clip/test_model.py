"""CLIP model: OpenAI parameter layout, shapes at any resolution, the hooks methods use, and
hand-written parity for the attention, text pooling and the ResNet attention pool."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vocaseg.clip.model import CLIP, CLIPConfig, QuickGELU
from vocaseg.clip.weights import ARCHITECTURES, KNOWN_WEIGHTS, build
from vocaseg.errors import ConfigError

# docs/clip-weights.md §11: parameter counts in millions
PARAMS_M = {"RN50": 102.01, "ViT-B/16": 149.62, "ViT-B/32": 151.28}


@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_parameter_counts_match_spec(name):
    with torch.device("meta"):  # shapes only, no memory or init cost
        model = CLIP(ARCHITECTURES[name])
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == PARAMS_M[name]


def test_openai_key_names(tiny_vit_clip, tiny_rn_clip):
    vit = set(tiny_vit_clip.state_dict())
    for key in (
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.ln_pre.weight",
        "visual.transformer.resblocks.1.attn.in_proj_weight",
        "visual.transformer.resblocks.1.attn.in_proj_bias",
        "visual.transformer.resblocks.1.attn.out_proj.weight",
        "visual.transformer.resblocks.1.ln_1.bias",
        "visual.transformer.resblocks.1.mlp.c_fc.weight",
        "visual.transformer.resblocks.1.mlp.c_proj.bias",
        "visual.ln_post.weight",
        "visual.proj",
        "token_embedding.weight",
        "positional_embedding",
        "transformer.resblocks.0.attn.in_proj_weight",
        "ln_final.weight",
        "text_projection",
        "logit_scale",
    ):
        assert key in vit, key
    assert "attn_mask" not in vit  # non-persistent buffer
    rn = set(tiny_rn_clip.state_dict())
    for key in (
        "visual.conv3.weight",
        "visual.bn3.running_var",
        "visual.layer4.0.downsample.0.weight",
        "visual.layer4.0.downsample.1.bias",
        "visual.attnpool.positional_embedding",
        "visual.attnpool.q_proj.weight",
        "visual.attnpool.c_proj.bias",
    ):
        assert key in rn, key
    assert "visual.proj" not in rn


def test_encode_shapes_at_any_resolution(tiny_vit_clip, tiny_rn_clip):
    with torch.no_grad():
        for h, w in [(32, 32), (64, 96), (48, 80)]:
            assert tiny_vit_clip.encode_image(torch.randn(2, 3, h, w)).shape == (2, 32)
        for h, w in [(64, 64), (96, 128)]:
            assert tiny_rn_clip.encode_image(torch.randn(2, 3, h, w)).shape == (2, 32)
        tokens = torch.randint(1, 100, (3, 77))
        assert tiny_vit_clip.encode_text(tokens).shape == (3, 32)


def test_pos_embed_identity_shape_and_smoothness(tiny_vit_clip):
    visual = tiny_vit_clip.visual
    assert visual.interpolate_pos_embed(2, 2) is visual.positional_embedding
    assert visual.interpolate_pos_embed(5, 7).shape == (1 + 35, 64)
    # a linear ramp over columns stays (nearly) linear when upsampled
    g = 8
    ramp = torch.linspace(-1, 1, g).repeat(g, 1)  # [g, g], varies along columns
    with torch.no_grad():
        visual.grid_size = g
        visual.positional_embedding = torch.nn.Parameter(
            torch.cat([torch.zeros(1, 64), ramp.reshape(-1, 1).expand(-1, 64)])
        )
        out = visual.interpolate_pos_embed(16, 16)[1:, 0].reshape(16, 16)
    # the same ramp sampled at the new pixel centres (align_corners=False)
    centres = (torch.arange(16) + 0.5) / 16 * g - 0.5  # in old-grid units
    line = -1 + 2 * centres / (g - 1)
    assert (out[:, 1:] > out[:, :-1]).all()  # monotone
    assert (out - line).abs().max() < 0.05  # bicubic (a = -0.75) stays within 2.5% of the line
    assert torch.allclose(out, out[:1].expand(16, 16))  # rows stay identical


def test_forward_features_and_blocks(tiny_vit_clip):
    visual = tiny_vit_clip.visual
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        first, last = visual.forward_features(x, return_layers=(0, -1))
        tokens = visual.embed(x)
        assert tokens.shape == (2, 1 + 3 * 4, 64)
        by_hand = visual.transformer.resblocks[1](visual.transformer.resblocks[0](tokens))
        torch.testing.assert_close(first, visual.transformer.resblocks[0](tokens))
        torch.testing.assert_close(last, by_hand)
        pooled = visual.ln_post(last[:, 0]) @ visual.proj
        torch.testing.assert_close(pooled, visual(x))


def test_attention_matches_manual_heads(tiny_vit_clip):
    """The fused in_proj / out_proj attention equals per-head softmax attention written out."""
    block = tiny_vit_clip.visual.transformer.resblocks[0]
    attn = block.attn
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        d = 64 // attn.num_heads
        outs = []
        for h in range(attn.num_heads):
            sl = slice(h * d, (h + 1) * d)
            weights = (q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d)).softmax(-1)
            outs.append(weights @ v[..., sl])
        expected = attn.out_proj(torch.cat(outs, dim=-1))
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_text_pools_at_eot_and_is_causal(tiny_vit_clip):
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0] = 49406
    tokens[0, 1:4] = torch.tensor([320, 1125, 49407])
    tokens[1, 1:4] = torch.tensor([320, 1125, 49407])
    tokens[1, 10] = 5  # after EOT: must not change the causal output at the EOT position
    with torch.no_grad():
        out = tiny_vit_clip.encode_text(tokens)
        torch.testing.assert_close(out[0], out[1])
        # independent computation with an explicit boolean causal mask
        m = tiny_vit_clip
        x = m.token_embedding(tokens[:1]) + m.positional_embedding
        causal = torch.ones(77, 77, dtype=torch.bool).tril()
        for block in m.transformer.resblocks:
            y = block.ln_1(x)
            q, k, v = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, -1)
            heads = block.attn.num_heads

            def split(t, heads=heads):
                return t.view(1, 77, heads, -1).transpose(1, 2)

            a = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=causal)
            x = x + block.attn.out_proj(a.transpose(1, 2).reshape(1, 77, -1))
            x = x + block.mlp(block.ln_2(x))
        expected = m.ln_final(x)[0, 3] @ m.text_projection
        torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


def test_resnet_features_strides(tiny_rn_clip):
    with torch.no_grad():
        feats = tiny_rn_clip.visual.forward_features(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "res2": (1, 64, 16, 24),
        "res3": (1, 128, 8, 12),
        "res4": (1, 256, 4, 6),
        "res5": (1, 512, 2, 3),
    }


def test_attnpool_matches_hand_computation(tiny_rn_clip):
    """CLIP's attention pool written out: mean token + positions, 8-head attention, c_proj."""
    pool = tiny_rn_clip.visual.attnpool
    x = torch.randn(2, 512, 2, 2)
    with torch.no_grad():
        seq = x.flatten(2).permute(0, 2, 1)  # [B, 4, C]
        seq = torch.cat([seq.mean(1, keepdim=True), seq], 1) + pool.positional_embedding
        mha = torch.nn.MultiheadAttention(512, pool.num_heads, batch_first=True)
        mha.in_proj_weight.copy_(
            torch.cat([pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight])
        )
        mha.in_proj_bias.copy_(torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]))
        mha.out_proj.weight.copy_(torch.eye(512))
        mha.out_proj.bias.zero_()
        attended, _ = mha(seq, seq, seq, need_weights=False)
        expected = pool.c_proj(attended)
        torch.testing.assert_close(pool(x), expected[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pool.forward_tokens(x), expected, atol=1e-5, rtol=1e-5)
        # other sizes: right shape; the pos-embed is resized
        assert pool(torch.randn(1, 512, 3, 5)).shape == (1, 32)


def test_config_round_trip_and_errors(tiny_rn_config):
    again = CLIPConfig.from_dict(tiny_rn_config.to_dict())
    assert again == tiny_rn_config
    assert CLIPConfig.from_dict(ARCHITECTURES["ViT-B/16"].to_dict()).vision_heads == 12
    assert ARCHITECTURES["RN50"].vision_heads == 32
    with pytest.raises(ConfigError, match="unknown CLIPConfig keys"):
        CLIPConfig.from_dict({**tiny_rn_config.to_dict(), "depth": 3})
    with pytest.raises(ConfigError, match="activation"):
        CLIPConfig.from_dict({**tiny_rn_config.to_dict(), "activation": "relu"})
    with pytest.raises(ConfigError, match="unknown CLIP architecture"):
        build("ViT-Q/99")


def test_build_laion_name_sets_activation_and_stats():
    config = KNOWN_WEIGHTS["ViT-L-14:laion2b_s32b_b82k"].config
    assert config.activation == "gelu" and config.mean == (0.5, 0.5, 0.5)
    with torch.device("meta"):
        model = build("vit-l-14:laion2b-s32b-b82k")
    assert model.config == config
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)


def test_quick_gelu_inference_path_matches_formula():
    x = torch.randn(4, 7, requires_grad=True)
    expected = x * torch.sigmoid(1.702 * x)
    torch.testing.assert_close(QuickGELU()(x), expected)  # autograd path
    with torch.no_grad():
        torch.testing.assert_close(QuickGELU()(x), expected.detach())  # in-place path
