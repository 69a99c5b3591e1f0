"""Deformable attention: the grid_sample core against an explicit per-sample bilinear loop, the
module's offsets in pixels of each level, its initialisation, and the sine encoding."""

from __future__ import annotations

import math

import pytest
import torch

from vocaseg.models.layers import ms_deform_attn
from vocaseg.models.layers.deform_attn import MSDeformAttn
from vocaseg.models.layers.position import sine_position_encoding


def bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Value of ``image`` [d, H, W] at normalised (x, y), align_corners=False, zeros outside."""
    _, height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(image.shape[0], dtype=image.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            weight = (1 - abs(px - cx)) * (1 - abs(py - cy))
            if 0 <= cx < width and 0 <= cy < height:
                out += weight * image[:, cy, cx]
    return out


def naive_ms_deform_attn(value, shapes, locations, weights):
    batch, _, heads, dim = value.shape
    _, queries, _, _, points, _ = locations.shape
    starts = [0]
    for h, w in shapes.tolist():
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads, dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                for lv, (h, w) in enumerate(shapes.tolist()):
                    image = value[b, starts[lv] : starts[lv + 1], m].T.reshape(dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, lv, p].tolist()
                        out[b, q, m] += weights[b, q, m, lv, p] * bilinear(image, x, y)
    return out.flatten(2)


def test_ms_deform_attn_matches_explicit_bilinear_loop():
    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[3, 5], [2, 2], [4, 3]])
    batch, queries, heads, dim, points = 2, 3, 2, 4, 3
    value = torch.randn(batch, int(shapes.prod(1).sum()), heads, dim, generator=generator)
    # locations spill outside [0, 1] so the zero padding is exercised too
    locations = torch.rand(batch, queries, heads, 3, points, 2, generator=generator) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, 3, points, generator=generator)
    value, locations, weights = value.double(), locations.double(), weights.double()
    expected = naive_ms_deform_attn(value, shapes, locations, weights)
    actual = ms_deform_attn(value, shapes, locations, weights)
    assert actual.shape == (batch, queries, heads * dim)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    actual32 = ms_deform_attn(value.float(), shapes, locations.float(), weights.float())
    torch.testing.assert_close(actual32, expected.float(), atol=1e-5, rtol=0)


def test_offsets_are_pixels_of_each_level_and_weights_softmax():
    torch.manual_seed(0)
    attn = MSDeformAttn(dim=8, levels=2, heads=2, points=2)
    shapes = torch.tensor([[4, 6], [2, 3]])
    value = torch.randn(1, 30, 8)
    query = torch.randn(1, 5, 8)
    reference = torch.rand(1, 5, 2)
    offsets = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
    weights = attn.attention_weights(query).view(1, 5, 2, 4).softmax(-1).view(1, 5, 2, 2, 2)
    norm = torch.tensor([[6.0, 4.0], [3.0, 2.0]])  # (W_l, H_l)
    locations = reference[:, :, None, None, None, :] + offsets / norm[None, None, None, :, None, :]
    values = attn.value_proj(value).view(1, 30, 2, 4)
    expected = attn.output_proj(naive_ms_deform_attn(values, shapes, locations, weights))
    torch.testing.assert_close(attn(query, reference, value, shapes), expected, atol=1e-5, rtol=0)
    per_level = reference[:, :, None, :].expand(1, 5, 2, 2)  # [B, Q, L, 2] form, same points
    torch.testing.assert_close(attn(query, per_level, value, shapes), expected, atol=1e-5, rtol=0)


def test_padding_mask_zeroes_values():
    torch.manual_seed(0)
    attn = MSDeformAttn(dim=8, levels=1, heads=2, points=2)
    shapes = torch.tensor([[3, 3]])
    value, query, reference = torch.randn(1, 9, 8), torch.randn(1, 2, 8), torch.rand(1, 2, 2)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, 4] = True
    changed = value.clone()
    changed[0, 4] += 100.0
    out = attn(query, reference, value, shapes, mask)
    torch.testing.assert_close(attn(query, reference, changed, shapes, mask), out)
    assert not torch.allclose(attn(query, reference, changed, shapes), out)


def test_initial_offsets_are_rays_scaled_by_point_index():
    attn = MSDeformAttn(dim=16, levels=3, heads=8, points=4)
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2, 0], [3, 0], [4, 0]]))
    torch.testing.assert_close(bias[1, 2, 1], torch.tensor([2.0, 2.0]))  # 45°: (1, 1) · 2
    torch.testing.assert_close(bias[2, 1, 0], torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[5, 0, 3], torch.tensor([-4.0, -4.0]))  # 225°
    assert torch.equal(bias[:, 0], bias[:, 2])  # the same rays on every level


def test_dim_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(dim=10, heads=4)


def test_sine_encoding_formula():
    pos = sine_position_encoding(3, 4, channels_per_axis=6)
    assert pos.shape == (12, 3, 4)
    row, col = 2, 1
    y = (row + 1) / (3 + 1e-6) * 2 * math.pi
    x = (col + 1) / (4 + 1e-6) * 2 * math.pi
    expected = []
    for coord in (y, x):  # channels [y; x], sin/cos interleaved
        for i in range(6):
            angle = coord / 10000 ** (2 * (i // 2) / 6)
            expected.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
    torch.testing.assert_close(pos[:, row, col], torch.tensor(expected), atol=1e-5, rtol=0)
    assert torch.allclose(pos[:6, :, 0], pos[:6, :, 3])  # y channels constant along a row
