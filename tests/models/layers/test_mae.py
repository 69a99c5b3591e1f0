"""MAE pieces: random masking, patchify order, encoder/decoder shapes, initialisation and names
(loading MAE checkpoints into ZeroSeg is tested in tests/models/test_zeroseg.py)."""

import pytest
import torch

from vocaseg.models.layers.mae import (
    MaeDecoder,
    MaeEncoder,
    patchify,
    random_masking,
    unpatchify,
)

MAE_ENCODER_KEYS = {"cls_token", "pos_embed", "norm.weight", "norm.bias"}
MAE_DECODER_KEYS = {"mask_token", "decoder_pos_embed", "decoder_embed.weight", "decoder_pred.bias"}


def _tiny(depth: int = 1) -> tuple[MaeEncoder, MaeDecoder]:
    encoder = MaeEncoder(img_size=64, patch_size=16, dim=32, depth=depth, num_heads=4)
    decoder = MaeDecoder(grid_size=4, patch_size=16, encoder_dim=32, dim=16, depth=1, num_heads=2)
    return encoder, decoder


@pytest.mark.parametrize(
    ("length", "ratio"), [(196, 0.6), (196, 0.75), (16, 0.5), (10, 0.3), (7, 0.0)]
)
def test_masking_keeps_exact_count_and_unshuffles(length, ratio):
    x = torch.randn(3, length, 5)
    kept, mask, ids_restore = random_masking(x, ratio, torch.Generator().manual_seed(1))
    keep = int(length * (1 - ratio))
    assert kept.shape == (3, keep, 5)
    assert torch.all(mask.sum(1) == length - keep)
    # Unshuffle: [kept ; removed] gathered by ids_restore gives the raster order back.
    ids_shuffle = ids_restore.argsort(1)
    removed = x.gather(1, ids_shuffle[:, keep:, None].expand(-1, -1, 5))
    restored = torch.cat([kept, removed], 1).gather(1, ids_restore[..., None].expand(-1, -1, 5))
    assert torch.equal(restored, x)
    # mask = 1 exactly where a token was not kept.
    for b in range(3):
        kept_ids = set(ids_shuffle[b, :keep].tolist())
        assert [int(m) for m in mask[b]] == [0 if i in kept_ids else 1 for i in range(length)]


def test_masking_differs_per_sample():
    _, mask, _ = random_masking(torch.zeros(2, 196, 1), 0.6, torch.Generator().manual_seed(0))
    assert not torch.equal(mask[0], mask[1])


def test_patchify_order_row_col_py_px_channel():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    for row in range(2):
        for col in range(3):
            block = images[:, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4]  # [B, C, py, px]
            assert torch.equal(patches[:, row * 3 + col], block.permute(0, 2, 3, 1).flatten(1))
    assert torch.equal(unpatchify(patches, 4, (2, 3)), images)


def test_encoder_decoder_shapes_and_order():
    torch.manual_seed(0)
    encoder, decoder = _tiny()
    images = torch.randn(2, 3, 64, 64)
    out = encoder(images, mask_ratio=0.75)
    assert out.tokens.shape == (2, 1 + 4, 32) and out.grid == (4, 4)
    assert decoder(out.tokens, out.ids_restore).shape == (2, 16, 16 * 16 * 3)
    full = encoder(images)  # ratio 0: raster order, nothing masked
    assert full.tokens.shape == (2, 17, 32)
    assert torch.equal(full.ids_restore[0], torch.arange(16)) and full.mask.sum() == 0
    assert encoder(torch.randn(1, 3, 96, 64)).grid == (6, 4)  # resized table


def test_encoder_tokens_follow_the_kept_patches():
    """A kept token at shuffled slot j is patch ids_shuffle[j]: with no blocks the encoder output
    before the norm equals patch embedding + position of that patch."""
    torch.manual_seed(0)
    encoder = MaeEncoder(img_size=64, patch_size=16, dim=32, depth=0, num_heads=4)
    encoder.norm = torch.nn.Identity()
    images = torch.randn(1, 3, 64, 64)
    out = encoder(images, 0.5, torch.Generator().manual_seed(3))
    full = encoder.patch_embed(images) + encoder.pos_embed[:, 1:]
    ids_keep = out.ids_restore.argsort(1)[:, :8]
    torch.testing.assert_close(out.tokens[:, 1:], full[:, ids_keep[0]])


def test_mae_initialisation():
    torch.manual_seed(0)
    encoder, decoder = _tiny(depth=2)
    assert torch.all(encoder.blocks[0].attn.qkv.bias == 0)
    assert torch.all(decoder.decoder_pred.bias == 0)
    assert 0.005 < encoder.cls_token.std() < 0.05 and 0.005 < decoder.mask_token.std() < 0.05
    # xavier-uniform bound sqrt(6 / (fan_in + fan_out)) on the flattened patch embedding
    weight = encoder.patch_embed.proj.weight.flatten(1)
    bound = (6 / sum(weight.shape)) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound


def test_state_dict_names_are_mae_names():
    encoder, decoder = _tiny()
    assert set(encoder.state_dict()) >= MAE_ENCODER_KEYS
    assert "blocks.0.attn.qkv.weight" in encoder.state_dict()
    assert "patch_embed.proj.weight" in encoder.state_dict()
    assert set(decoder.state_dict()) >= MAE_DECODER_KEYS
    assert "decoder_blocks.0.mlp.fc2.weight" in decoder.state_dict()
    assert "decoder_norm.weight" in decoder.state_dict()
    assert not set(encoder.state_dict()) & set(decoder.state_dict())
    assert not any(p.requires_grad for p in [encoder.pos_embed, decoder.decoder_pos_embed])
