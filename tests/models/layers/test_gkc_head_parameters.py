"""At GKC's RN50 sizes the pixel decoder and the masked-attention decoder hold exactly the
parameters the shapes of the GKC paper's Mask2Former head imply (counted by hand below)."""

from __future__ import annotations

from vocaseg.models.layers.mask_decoder import MaskedAttentionDecoder
from vocaseg.models.layers.pixel_decoder import PixelDecoder


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear(i: int, o: int) -> int:
    return i * o + o


def test_pixel_decoder_parameters():
    input_proj = sum(linear(c, 256) + 2 * 256 for c in (2048, 1024, 512))  # 1x1 conv + GN
    msda = linear(256, 8 * 3 * 4 * 2) + linear(256, 8 * 3 * 4) + 2 * linear(256, 256)
    layer = msda + 2 * 256 + linear(256, 1024) + linear(1024, 256) + 2 * 256
    fpn = (256 * 256 + 512) + (256 * 256 * 9 + 512) + linear(256, 256)  # adapter, layer, mask
    expected = input_proj + 3 * 256 + 6 * layer + fpn
    assert count(PixelDecoder()) == expected == 6_035_904


def test_mask_decoder_parameters():
    attention = 3 * linear(256, 256) + linear(256, 256) + 2 * 256  # in/out projections + LN
    ffn = linear(256, 2048) + linear(2048, 256) + 2 * 256
    tables = 100 * 256 * 2 + 3 * 256  # query features, query positions, level embedding
    heads = 2 * 256 + linear(256, 256) + 3 * linear(256, 256)  # LN, class feature, mask MLP
    expected = 9 * (2 * attention + ffn) + tables + heads
    assert count(MaskedAttentionDecoder()) == expected == 14_524_416
