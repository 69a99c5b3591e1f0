"""Deformable-attention pixel decoder: shapes and level order, the released key layout, fp32 under
autocast, every parameter trained, and the encoder mixing levels."""

from __future__ import annotations

import torch

from vocaseg.models.layers.pixel_decoder import PixelDecoder, pixel_centres

CHANNELS = (8, 16, 24, 32)


def tiny_decoder() -> PixelDecoder:
    torch.manual_seed(0)
    return PixelDecoder(CHANNELS, dim=32, mask_dim=16, depth=2, heads=4, points=2, ffn_dim=64,
                        groups=8)  # fmt: skip


def features(size: int = 64, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        f"res{level}": torch.randn(
            batch, c, size // 2**level, size // 2**level, generator=generator
        )
        for level, c in zip(range(2, 6), CHANNELS)
    }


def test_shapes_and_level_order():
    mask_features, memories = tiny_decoder()(features(64))
    assert mask_features.shape == (2, 16, 16, 16)
    assert [tuple(m.shape) for m in memories] == [(2, 32, 2, 2), (2, 32, 4, 4), (2, 32, 8, 8)]


def test_non_square_input():
    inputs = {k: v[..., : v.shape[-1] // 2] for k, v in features(64).items()}
    mask_features, memories = tiny_decoder()(inputs)
    assert mask_features.shape == (2, 16, 16, 8)
    assert [tuple(m.shape[-2:]) for m in memories] == [(2, 1), (4, 2), (8, 4)]


def test_released_key_layout():
    keys = set(tiny_decoder().state_dict())
    for key in (
        "input_proj.0.0.weight",
        "input_proj.2.1.bias",
        "transformer.level_embed",
        "transformer.encoder.layers.1.self_attn.sampling_offsets.weight",
        "transformer.encoder.layers.0.self_attn.value_proj.bias",
        "transformer.encoder.layers.0.norm2.weight",
        "transformer.encoder.layers.1.linear1.weight",
        "adapter_1.weight",
        "adapter_1.norm.weight",
        "layer_1.norm.bias",
        "mask_features.bias",
    ):
        assert key in keys, key
    assert "adapter_1.bias" not in keys  # the FPN convs are bias-free (GroupNorm follows)


def test_levels_are_mixed_and_res2_feeds_only_mask_features():
    decoder = tiny_decoder().eval()
    base = features(64)
    mask_features, memories = decoder(base)
    changed = dict(base, res5=base["res5"] + 1.0)
    _, memories5 = decoder(changed)
    assert not torch.allclose(memories5[2], memories[2])  # res5 reaches the res3 memory
    changed = dict(base, res2=base["res2"] + 1.0)
    mask2, memories2 = decoder(changed)
    assert all(torch.equal(a, b) for a, b in zip(memories, memories2))
    assert not torch.allclose(mask2, mask_features)


def test_fp32_under_autocast():
    decoder = tiny_decoder().eval()
    inputs = features(32)
    expected, _ = decoder(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual, memories = decoder({k: v.bfloat16() for k, v in inputs.items()})
    assert actual.dtype == torch.float32 and memories[0].dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=0.05, rtol=0.05)  # inputs rounded to bf16


def test_every_parameter_gets_a_gradient():
    decoder = tiny_decoder()
    # the offset and weight projections start at zero, so the positions (level embedding) reach
    # the loss only once they have moved: move them as one optimiser step would
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if name.endswith(("sampling_offsets.weight", "attention_weights.weight")):
                param.normal_(std=0.01)
    mask_features, memories = decoder(features(32))
    (mask_features.square().mean() + sum(m.square().mean() for m in memories)).backward()
    silent = [n for n, p in decoder.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent, silent


def test_pixel_centres():
    centres = pixel_centres(2, 4, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(centres[:5], torch.tensor(
        [[0.125, 0.25], [0.375, 0.25], [0.625, 0.25], [0.875, 0.25], [0.125, 0.75]]))  # fmt: skip
