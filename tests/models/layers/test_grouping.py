"""GroupViT grouping and ZeroSeg's segmentation head: hard assignment with straight-through
gradient, one segment per pixel from chained assignments, fp32 assignment under autocast,
state-dict names and the ViT-B/16 parameter count implied by the layer shapes
(GroupViT, ZeroSeg Chen et al. ICCV 2023 §3.2)."""

import pytest
import torch

from vocaseg.models.layers.grouping import (
    AssignAttention,
    GroupingBlock,
    MixerMlp,
    Projector,
    SegmentationHead,
    chain_assignments,
)
from vocaseg.models.layers.mae import MaeDecoder, MaeEncoder


def _tiny_head(**overrides) -> SegmentationHead:
    options = dict(
        in_dim=32, dim=32, num_heads=4, num_group_tokens=(8, 4, 0), num_output_groups=(8, 4),
        proj_dim=24, proj_hidden_dim=48,
    )  # fmt: skip
    return SegmentationHead(**{**options, **overrides})


def test_hard_assignment_is_one_hot_with_straight_through_gradient():
    torch.manual_seed(0)
    attn = AssignAttention(16).train()
    query = torch.randn(2, 5, 16)
    key = torch.randn(2, 12, 16, requires_grad=True)
    _, assignment = attn(query, key)
    hard = assignment.hard
    assert hard.shape == (2, 5, 12)
    # Forward: exactly one group per token (values 0/1 up to float rounding).
    torch.testing.assert_close(hard.sum(1), torch.ones(2, 12))
    assert torch.all((hard - hard.round()).abs() < 1e-6)
    torch.testing.assert_close(assignment.soft.sum(1), torch.ones(2, 12))
    # Backward: the hard forward alone would give no gradient to the logits; straight-through does.
    (hard * torch.randn_like(hard)).sum().backward()
    assert attn.q_proj.weight.grad is not None and attn.q_proj.weight.grad.abs().sum() > 0
    assert key.grad.abs().sum() > 0


def test_eval_assignment_is_argmax_of_soft_and_output_formula():
    torch.manual_seed(0)
    attn = AssignAttention(16, assign_eps=1.0).eval()
    query, key = torch.randn(1, 4, 16), torch.randn(1, 9, 16)
    out, assignment = attn(query, key)
    logits = attn.q_proj(query) @ attn.k_proj(key).transpose(1, 2) / 4.0  # √16
    torch.testing.assert_close(assignment.soft, logits.softmax(1))
    expected_hard = torch.nn.functional.one_hot(logits.argmax(1), 4).transpose(1, 2).float()
    torch.testing.assert_close(assignment.hard, expected_hard)
    # out_s = W_o( Σ_n A[s,n] W_v x_n / (Σ_n A[s,n] + 1) )
    weights = expected_hard / (expected_hard.sum(-1, keepdim=True) + 1.0)
    torch.testing.assert_close(out, attn.proj(weights @ attn.v_proj(key)))
    out_again, _ = attn(query, key)
    assert torch.equal(out, out_again)  # no noise at eval


def test_training_assignment_uses_gumbel_noise():
    torch.manual_seed(0)
    attn = AssignAttention(8, gumbel_tau=1.0).train()
    query, key = torch.randn(1, 6, 8) * 0.01, torch.randn(1, 200, 8) * 0.01  # near-flat logits
    _, first = attn(query, key)
    _, second = attn(query, key)
    assert not torch.equal(first.hard, second.hard)
    torch.testing.assert_close(first.soft, second.soft)  # the noise-free softmax is returned


def test_assignment_logits_stay_fp32_under_autocast():
    torch.manual_seed(0)
    block = GroupingBlock(16, 2, num_group_tokens=4, num_output_groups=3).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, assignment = block(torch.randn(2, 10, 16), torch.randn(2, 4, 16))
    assert assignment.soft.dtype == torch.float32 and assignment.hard.dtype == torch.float32
    assert out.shape == (2, 3, 16)


def test_grouping_block_width_change_uses_reduction():
    block = GroupingBlock(16, 2, num_group_tokens=4, num_output_groups=2, out_dim=24)
    out, _ = block(torch.randn(1, 7, 16), torch.randn(1, 4, 16))
    assert out.shape == (1, 2, 24)
    assert tuple(block.reduction[1].weight.shape) == (24, 16) and block.reduction[1].bias is None


def test_mixer_mlp_mixes_tokens():
    mixer = MixerMlp(6, 10, 3)
    assert mixer(torch.randn(2, 6, 5)).shape == (2, 3, 5)


def test_chained_assignments_give_each_pixel_exactly_one_segment():
    torch.manual_seed(0)
    head = _tiny_head().eval()
    out = head(torch.randn(2, 20, 32))
    hard = chain_assignments([a.hard for a in out.assignments])  # [B, 4, 20]
    assert hard.shape == (2, 4, 20)
    torch.testing.assert_close(hard.sum(1), torch.ones(2, 20))
    assert torch.all((hard - hard.round()).abs() < 1e-6)
    soft = chain_assignments([a.soft for a in out.assignments])  # M = A2_soft · A1_soft
    torch.testing.assert_close(soft.sum(1), torch.ones(2, 20))
    onehot = torch.nn.functional.one_hot(soft.argmax(1), 4)  # the inference rule
    assert torch.all(onehot.sum(-1) == 1)


def test_head_outputs_and_gradients():
    torch.manual_seed(0)
    head = _tiny_head().train()
    x = torch.randn(2, 20, 32, requires_grad=True)
    out = head(x)
    assert out.segments.shape == (2, 4, 32)
    assert [tuple(a.soft.shape) for a in out.assignments] == [(2, 8, 20), (2, 4, 8)]
    assert out.g.shape == (2, 4, 24) and out.z.shape == (2, 24)
    torch.testing.assert_close(out.z, head.proj(out.segments.mean(1)))
    (out.g.sum() + out.z.sum()).backward()
    assert x.grad.abs().sum() > 0
    assert head.layers[0].group_token.grad.abs().sum() > 0
    assert head.layers[1].group_projector[1].fc1.weight.grad.abs().sum() > 0


def test_head_state_dict_names_follow_groupvit():
    head = _tiny_head(in_dim=48)
    keys = set(head.state_dict())
    expected = {
        "embed.weight",
        "layers.0.group_token",
        "layers.1.group_token",
        "layers.0.blocks.1.attn.qkv.weight",
        "layers.2.blocks.0.mlp.fc2.bias",
        "layers.0.downsample.norm_tokens.weight",
        "layers.0.downsample.norm_post_tokens.weight",
        "layers.0.downsample.norm_x.weight",
        "layers.0.downsample.norm_new_x.weight",
        "layers.1.downsample.mlp_inter.fc1.weight",
        "layers.0.downsample.pre_assign_attn.attn.q_proj.weight",
        "layers.0.downsample.pre_assign_attn.attn.v_proj.bias",
        "layers.0.downsample.pre_assign_attn.norm_post.weight",
        "layers.0.downsample.assign.k_proj.weight",
        "layers.0.downsample.assign.proj.bias",
        "layers.1.downsample.mlp_channels.fc2.weight",
        "layers.1.group_projector.0.weight",
        "layers.1.group_projector.1.fc1.weight",
        "layers.1.group_projector.1.fc2.weight",
        "norm.weight",
        "proj.fc1.weight",
        "proj.fc2.weight",
    }
    assert expected <= keys
    assert not any(k.startswith(("layers.2.group_token", "layers.2.downsample")) for k in keys)
    assert "embed.weight" not in _tiny_head().state_dict()
    assert torch.all(head.layers[1].group_token == 0)  # zero-init: the projector adds to it
    assert head.layers[0].group_token.std() > 0


@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_projector_norms(norm):
    proj = Projector(8, 16, 4, norm).train()
    assert proj(torch.randn(3, 5, 8)).shape == (3, 5, 4)
    assert "norm.weight" in proj.state_dict()


def _analytic_counts(d: int = 768, dec: int = 512, proj_hidden: int = 4096, clip: int = 768):
    """Parameter counts implied by the layer shapes (ViT-B/16 student, 224 px, 16 px patches)."""

    def linear(i, o, bias=True):
        return i * o + (o if bias else 0)

    def block(w):  # norm1, qkv, proj, norm2, fc1, fc2
        return 2 * w + linear(w, 3 * w) + linear(w, w) + 2 * w + linear(w, 4 * w) + linear(4 * w, w)

    encoder = linear(3 * 16 * 16, d) + d + 12 * block(d) + 2 * d  # patch, cls, blocks, norm
    decoder = linear(d, dec) + dec + 8 * block(dec) + 2 * dec + linear(dec, 16 * 16 * 3)

    def grouping(s, s_out):
        norms = 4 * 2 * d
        mlp_inter = linear(s, d // 2) + linear(d // 2, s_out)
        cross = 4 * linear(d, d) + 2 * d + linear(d, 4 * d) + linear(4 * d, d) + 2 * d
        assign = 4 * linear(d, d)
        channels = linear(d, 4 * d) + linear(4 * d, d)
        return norms + mlp_inter + cross + assign + channels

    group_projector = 2 * d + linear(32, d // 2) + linear(d // 2, 8)
    head = (
        5 * block(d) + 32 * d + 8 * d + grouping(32, 32) + grouping(8, 8) + group_projector + 2 * d
    )
    projector = linear(d, proj_hidden) + linear(proj_hidden, clip)
    return encoder, decoder, head, projector


def test_vit_b16_parameter_count_matches_spec_shapes():
    with torch.device("meta"):
        encoder, decoder, head = MaeEncoder(), MaeDecoder(), SegmentationHead()

    def count(module, keep=lambda name: True):
        return sum(p.numel() for n, p in module.named_parameters() if keep(n))

    expected = _analytic_counts()
    actual = (
        count(encoder),
        count(decoder),
        count(head, lambda n: not n.startswith("proj.")),
        count(head, lambda n: n.startswith("proj.")),
    )
    assert actual == expected
    assert actual == (85_647_360, 26_008_320, 63_878_064, 6_296_320)
    # the fixed sin-cos tables are buffers: [1, 197, 768] and [1, 197, 512]
    assert encoder.pos_embed.shape == (1, 197, 768) and decoder.decoder_pos_embed.shape == (
        1,
        197,
        512,
    )
