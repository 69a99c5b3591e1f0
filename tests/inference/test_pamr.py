"""PAMR against a direct per-pixel re-computation of Araslanov & Roth's refinement (NACLIP settings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vocaseg.inference.pamr import pamr, pamr_affinity


def _reference(image: np.ndarray, masks: np.ndarray, steps: int, dilations) -> np.ndarray:
    """Plain loops: neighbours by clamped coordinates, unbiased std over the 3×3 windows of all
    dilations (centre once per dilation), channel-mean of -|I(x)-I(x+p)|/(1e-8+0.1σ), softmax
    over neighbours, then ``steps`` rounds of weighted neighbour averaging."""
    _, height, width = image.shape
    offsets = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    neighbours = [o for o in offsets if o != (0, 0)]

    def at(y, x, dy, dx):
        return min(max(y + dy, 0), height - 1), min(max(x + dx, 0), width - 1)

    weights = np.zeros((height, width, len(neighbours)))
    for y in range(height):
        for x in range(width):
            logits = np.zeros(len(neighbours))
            for c in range(image.shape[0]):
                window = [image[c, y, x]] * len(dilations)
                window += [image[(c, *at(y, x, dy, dx))] for dy, dx in neighbours]
                mean = sum(window) / len(window)
                std = math.sqrt(sum((v - mean) ** 2 for v in window) / (len(window) - 1))
                for k, (dy, dx) in enumerate(neighbours):
                    diff = abs(image[c, y, x] - image[(c, *at(y, x, dy, dx))])
                    logits[k] += -diff / (1e-8 + 0.1 * std) / image.shape[0]
            e = np.exp(logits - logits.max())
            weights[y, x] = e / e.sum()
    out = masks.copy()
    for _ in range(steps):
        new = np.zeros_like(out)
        for y in range(height):
            for x in range(width):
                for k, (dy, dx) in enumerate(neighbours):
                    new[:, y, x] += weights[y, x, k] * out[(slice(None), *at(y, x, dy, dx))]
        out = new
    return out


@pytest.mark.parametrize(("dilations", "size"), [((8, 16), (11, 13)), ((1, 2), (7, 9))])
def test_matches_direct_recomputation(dilations, size):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, *size, generator=g, dtype=torch.float64)
    masks = torch.rand(2, 4, *size, generator=g, dtype=torch.float64)
    got = pamr(image, masks, steps=3, dilations=dilations)
    for b in range(2):
        expected = _reference(image[b].numpy(), masks[b].numpy(), 3, dilations)
        np.testing.assert_allclose(got[b].numpy(), expected, rtol=1e-10, atol=1e-12)


def test_zero_steps_is_the_identity():
    image, masks = torch.rand(1, 3, 6, 7), torch.rand(1, 5, 6, 7)
    assert pamr(image, masks, steps=0) is masks


def test_affinities_are_a_distribution_and_constants_stay_constant():
    image = torch.rand(1, 3, 9, 10)
    weights = pamr_affinity(image, (1, 2))
    assert weights.shape == (1, 16, 9, 10)
    torch.testing.assert_close(weights.sum(1), torch.ones(1, 9, 10))
    flat = torch.full((1, 2, 9, 10), 0.25)
    torch.testing.assert_close(pamr(image, flat, steps=5, dilations=(1, 2)), flat)


def test_refinement_does_not_cross_an_image_edge():
    # left half black, right half white; a mask lit on the left stays on the left
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., :4] = 1.0
    out = pamr(image + 0.01 * torch.rand(1, 3, 8, 8), masks, steps=10, dilations=(1, 2))
    assert out[..., 5:].max() < 1e-3 and out[..., :3].min() > 0.99


def test_masks_of_another_size_are_resized_to_the_image():
    image, masks = torch.rand(1, 3, 12, 12), torch.rand(1, 2, 6, 6)
    assert pamr(image, masks, steps=1, dilations=(1,)).shape == (1, 2, 12, 12)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="image"):
        pamr(torch.rand(3, 8, 8), torch.rand(1, 2, 8, 8))


def test_pamr_steps_refine_the_stitched_scores_before_finalize(tiny_vit_clip, monkeypatch):
    # predict_scores with pamr_steps = finalize(pamr(image, stitched)); 0 steps = no PAMR.
    from vocaseg.inference import predict
    from vocaseg.models.registry import create_model
    from vocaseg.text.vocab import Vocabulary

    model = create_model("naclip", clip=tiny_vit_clip, templates="single", short_side=0, window=0)
    vocab = Vocabulary.from_names(["cat", "dog", "sky"])
    text = model.text_for(vocab)
    images = torch.rand(1, 3, 32, 48) * 255
    stitched = []
    finalize = model.finalize
    monkeypatch.setattr(model, "finalize", lambda s, v, b: stitched.append(s) or finalize(s, v, b))
    with torch.no_grad():
        plain = predict.predict_scores(model, images, text, vocab)
        model.update_settings(pamr_steps=3)
        refined = predict.predict_scores(model, images, text, vocab)
    expected = pamr(predict.normalize(images, model.preprocess), stitched[0], steps=3)
    assert torch.allclose(stitched[1], expected, atol=1e-6)
    assert not torch.allclose(plain, refined)
