"""Masked-attention decoder: prediction count and shapes, the blocked-position rule, attention that
ignores exactly the masked positions, and no NaN when a query's mask is empty."""

from __future__ import annotations

import torch

from vocaseg.models.layers.mask_decoder import (
    CrossAttentionLayer,
    MaskedAttentionDecoder,
    blocked_positions,
)


def tiny_decoder(layers: int = 4) -> MaskedAttentionDecoder:
    torch.manual_seed(0)
    return MaskedAttentionDecoder(
        dim=16, heads=2, layers=layers, queries=5, ffn_dim=32, mask_dim=8, class_dim=12
    )


def memories(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 16, s, s, generator=generator) for s in (2, 4, 8)]


def test_predictions_after_queries_and_every_layer():
    mask_features = torch.randn(2, 8, 16, 16)
    outputs = tiny_decoder(layers=4)(memories(), mask_features)
    assert len(outputs) == 5
    for out in outputs:
        assert out["class_feature"].shape == (2, 5, 12)
        assert out["mask_logits"].shape == (2, 5, 16, 16)


def test_blocked_positions_rule():
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 0, :2] = 5.0  # query 0: top half
    logits[0, 1] = 5.0  # query 1: everywhere; query 2: nowhere -> unblocked
    blocked = blocked_positions(logits, (2, 2), heads=3)
    assert blocked.shape == (3, 3, 4) and not blocked.requires_grad
    assert blocked[0, 0].tolist() == [False, False, True, True]
    assert not blocked[0, 1].any() and not blocked[0, 2].any()
    assert all(torch.equal(blocked[h], blocked[0]) for h in range(3))
    two = blocked_positions(torch.cat([logits, -logits]), (2, 2), heads=2)
    assert torch.equal(two[1], two[0]) and two[2, 0].tolist() == [True, True, False, False]


def test_cross_attention_ignores_exactly_the_blocked_positions():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(dim=8, heads=2).eval()
    x, memory = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    pos, query_pos = torch.randn(6, 8), torch.randn(1, 3, 8)
    allowed = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0]]).bool()
    blocked = (~allowed)[None].repeat_interleave(2, dim=0)  # [B·heads, Q, M]
    out = layer(x, memory, pos, query_pos, blocked)
    for position in range(6):
        changed = memory.clone()
        changed[0, position] += 3.0
        new = layer(x, changed, pos, query_pos, blocked)
        for query in range(3):
            same = torch.allclose(new[0, query], out[0, query], atol=1e-6)
            assert same == (not allowed[query, position]), (query, position)


def test_empty_masks_give_plain_attention_and_no_nan():
    decoder = tiny_decoder(layers=3).eval()
    mask_features = torch.ones(2, 8, 16, 16)
    head = decoder.mask_embed.layers[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-1.0)  # every mask logit -8: every query blocked everywhere
        empty = decoder(memories(), mask_features)
        head.bias.fill_(1.0)  # every mask logit +8: nothing blocked
        full = decoder(memories(), mask_features)
    for a, b in zip(empty, full):
        assert torch.isfinite(a["class_feature"]).all()
        torch.testing.assert_close(a["class_feature"], b["class_feature"])


def test_masks_steer_the_queries():
    decoder = tiny_decoder(layers=2).eval()
    generator = torch.Generator().manual_seed(1)
    mask_features = torch.randn(2, 8, 16, 16, generator=generator)
    first = decoder(memories(), mask_features)[-1]["class_feature"]
    second = decoder(memories(), -mask_features)[-1]["class_feature"]
    assert not torch.allclose(first, second)  # only the attention masks differ between the runs
