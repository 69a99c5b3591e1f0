"""GKC caption grounding loss: parity with a plain loop, lower for matching captions, exact
padding invariance and the gradient reaching regions and the scale."""

from __future__ import annotations

import math

import torch

from vocaseg.models.gkc_grounding import grounding_loss


def loop_loss(words, regions, scale):
    """The loss from per-pair loops over unpadded lists (words[i]: [W_i, D], regions[j]: [R_j, D])."""
    size = len(words)
    costs = [[[0.0] * size for _ in range(size)] for _ in range(2)]
    for i in range(size):
        for j in range(size):
            w = [x / (x.norm() + 1e-7) for x in words[i]]
            r = [y / (y.norm() + 1e-7) for y in regions[j]]
            sim = [[float(a @ b) for b in r] for a in w]
            if not w and not r:
                costs[0][i][j] = costs[1][i][j] = None
                continue
            if not r:  # each word attends uniformly to padding at cosine 0
                costs[0][i][j] = scale
            else:
                total = 0.0
                for row in sim:
                    z = sum(math.exp(scale * s) for s in row)
                    total += sum(math.exp(scale * s) / z * scale * (1 - s) for s in row)
                costs[0][i][j] = total / max(len(w), 1)
            if not w:
                costs[1][i][j] = scale
            else:
                total = 0.0
                for k in range(len(r)):
                    column = [row[k] for row in sim]
                    z = sum(math.exp(scale * s) for s in column)
                    total += sum(math.exp(scale * s) / z * scale * (1 - s) for s in column)
                costs[1][i][j] = total / max(len(r), 1)
    terms = []
    for cost in costs:
        top = max(c for row in cost for c in row if c is not None)
        cost = [[top + 100.0 if c is None else c for c in row] for row in cost]
        caption = image = 0.0
        for i in range(size):  # image i chooses among the captions; caption i among the images
            caption -= math.log(math.exp(-cost[i][i]) / sum(math.exp(-r[i]) for r in cost))
            image -= math.log(math.exp(-cost[i][i]) / sum(math.exp(-c) for c in cost[i]))
        terms += [caption / size, image / size]
    return sum(terms) / 4


def padded(rows, width, dim, fill=0.0):
    out = torch.full((len(rows), width, dim), fill)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
        mask[b, : len(r)] = True
    return out, mask


def batch(seed=0, counts_w=(3, 1, 0, 5), counts_r=(4, 2, 3, 0), dim=8):
    g = torch.Generator().manual_seed(seed)
    words = [torch.randn(n, dim, generator=g) for n in counts_w]
    regions = [torch.randn(n, dim, generator=g) for n in counts_r]
    return words, regions


def test_matches_a_loop_over_pairs():
    words, regions = batch()
    w, wm = padded(words, 5, 8)
    r, rm = padded(regions, 4, 8)
    for scale in (1.0, 14.3):
        got = grounding_loss(w, wm, r, rm, torch.tensor(scale))
        assert math.isclose(float(got), loop_loss(words, regions, scale), rel_tol=1e-4)


def test_an_image_with_neither_words_nor_regions_matches_the_loop():
    words, regions = batch(counts_w=(2, 0, 3), counts_r=(1, 0, 2))
    w, wm = padded(words, 3, 8)
    r, rm = padded(regions, 2, 8)
    got = grounding_loss(w, wm, r, rm, torch.tensor(5.0))
    assert math.isclose(float(got), loop_loss(words, regions, 5.0), rel_tol=1e-4)


def test_padding_with_any_content_leaves_the_value_unchanged():
    words, regions = batch(seed=1)
    tight = grounding_loss(*padded(words, 5, 8), *padded(regions, 4, 8), torch.tensor(10.0))
    w, wm = padded(words, 9, 8, fill=3.0)
    r, rm = padded(regions, 12, 8, fill=-7.0)
    loose = grounding_loss(w, wm, r, rm, torch.tensor(10.0))
    assert torch.equal(tight, loose) or math.isclose(float(tight), float(loose), rel_tol=1e-6)


def test_regions_equal_to_their_caption_words_score_lower_than_shuffled_captions():
    g = torch.Generator().manual_seed(2)
    words = [torch.randn(3, 16, generator=g) for _ in range(4)]
    w, wm = padded(words, 3, 16)
    scale = torch.tensor(10.0)
    aligned = grounding_loss(w, wm, w.clone(), wm.clone(), scale)
    shuffled = grounding_loss(w, wm, w[[1, 2, 3, 0]], wm, scale)
    assert aligned < shuffled
    assert aligned < math.log(4)  # better than chance among four captions


def test_gradients_reach_the_regions_and_the_scale():
    words, regions = batch(seed=3)
    w, wm = padded(words, 5, 8)
    r, rm = padded(regions, 4, 8)
    r.requires_grad_(True)
    s = torch.tensor(math.log(10.0), requires_grad=True)
    grounding_loss(w, wm, r, rm, s.exp()).backward()
    assert r.grad[rm].abs().sum() > 0 and r.grad[~rm].abs().sum() == 0
    assert s.grad is not None and s.grad != 0
