"""ViT blocks: the MAE sin-cos table layout (against a direct reading of the formula), its
resize, the block's parameter names and drop path."""

import math

import pytest
import torch

from vocaseg.models.layers.vit import (
    Block,
    DropPath,
    PatchEmbed,
    resize_pos_embed,
    sincos_pos_embed_2d,
)


def _expected_entry(dim: int, row: int, col: int, i: int) -> float:
    """Dim i of patch (row, col): first half column, second half row; sin block then cos block."""
    half, quarter = dim // 2, dim // 4
    pos = col if i < half else row
    j = i % half
    omega = 10000 ** (-(j % quarter) / quarter)
    return math.sin(pos * omega) if j < quarter else math.cos(pos * omega)


@pytest.mark.parametrize(("dim", "grid_h", "grid_w"), [(16, 3, 3), (32, 2, 5)])
def test_sincos_table_layout(dim, grid_h, grid_w):
    table = sincos_pos_embed_2d(dim, grid_h, grid_w)
    assert table.shape == (1 + grid_h * grid_w, dim)
    assert torch.all(table[0] == 0)  # the cls slot
    expected = torch.tensor(
        [
            [_expected_entry(dim, n // grid_w, n % grid_w, i) for i in range(dim)]
            for n in range(grid_h * grid_w)  # raster order
        ]
    )
    torch.testing.assert_close(table[1:], expected.float(), atol=1e-6, rtol=0)
    assert sincos_pos_embed_2d(dim, grid_h, grid_w, cls_token=False).shape[0] == grid_h * grid_w


def test_sincos_needs_width_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(18, 2, 2)


def test_resize_keeps_cls_and_identity():
    table = sincos_pos_embed_2d(16, 4, 4)[None]
    torch.testing.assert_close(resize_pos_embed(table, 4, 4, 4), table)
    resized = resize_pos_embed(table, 4, 6, 8)
    assert resized.shape == (1, 1 + 48, 16)
    assert torch.equal(resized[:, 0], table[:, 0])


def test_block_names_match_mae():
    names = set(Block(32, 4).state_dict())
    assert names == {
        f"{m}.{p}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    }
    assert Block(32, 4, eps=1e-5).norm1.eps == 1e-5
    assert tuple(PatchEmbed(16, 3, 32).state_dict()["proj.weight"].shape) == (32, 3, 16, 16)


def test_patch_embed_rejects_non_multiple():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        PatchEmbed(16, 3, 8)(torch.zeros(1, 3, 40, 32))


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    layer = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    out = layer(x)
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}  # kept samples rescaled by 1 / 0.5
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert torch.equal(layer.eval()(x), x)
