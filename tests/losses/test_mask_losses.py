"""Point-sampled mask losses and the classification loss against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vocaseg.losses.mask_losses import (
    NUM_POINTS,
    classification_loss,
    mask_losses,
    point_sample,
    uncertain_points,
    uniform_points,
)


def bilinear(image: torch.Tensor, x: float, y: float) -> float:
    """``image`` [H, W] at normalised (x, y): align_corners=False, zeros outside."""
    height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for cx in (x0, x0 + 1):
        for cy in (y0, y0 + 1):
            if 0 <= cx < width and 0 <= cy < height:
                total += (1 - abs(px - cx)) * (1 - abs(py - cy)) * float(image[cy, cx])
    return total


def sample(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return torch.tensor([bilinear(image, x, y) for x, y in coords.tolist()], dtype=torch.float64)


def test_point_sample_is_bilinear_with_zero_padding():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 5, 7, generator=generator, dtype=torch.float64)
    coords = torch.rand(2, 9, 2, generator=generator, dtype=torch.float64)
    out = point_sample(maps, coords)
    assert out.shape == (2, 3, 9)
    for n in range(2):
        for c in range(3):
            torch.testing.assert_close(out[n, c], sample(maps[n, c], coords[n]))


def test_uncertain_points_keep_the_most_uncertain_candidates():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 6, 6, generator=generator)
    points = uncertain_points(logits, num_points=8, generator=torch.Generator().manual_seed(5))
    assert points.shape == (2, 8, 2)
    candidates = uniform_points(2, 24, logits.device, torch.Generator().manual_seed(5))
    for n in range(2):
        certainty = torch.tensor(
            [abs(bilinear(logits[n, 0], x, y)) for x, y in candidates[n].tolist()]
        )
        chosen = points[n, :6]  # 0.75 · 8 uncertain points, then 2 uniform ones
        chosen_certainty = torch.tensor(
            [abs(bilinear(logits[n, 0], x, y)) for x, y in chosen.tolist()]
        )
        assert torch.allclose(
            chosen_certainty.sort().values, certainty.sort().values[:6], atol=1e-5
        )


def test_default_point_budget():
    points = uncertain_points(torch.randn(1, 1, 8, 8))
    assert points.shape == (1, NUM_POINTS, 2) and NUM_POINTS == 12544
    assert ((points >= 0) & (points < 1)).all()


def test_mask_losses_match_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 4, 4, generator=generator, dtype=torch.float64)
    target = (torch.rand(3, 8, 8, generator=generator) > 0.5).double()
    losses = mask_losses(pred, target, num_masks=2.5, num_points=8,
                         generator=torch.Generator().manual_seed(7))  # fmt: skip
    coords = uncertain_points(pred.float()[:, None], 8, generator=torch.Generator().manual_seed(7))
    bce = dice = 0.0
    for n in range(3):
        x = sample(pred[n], coords[n].double())
        t = sample(target[n], coords[n].double())
        p = torch.sigmoid(x)
        bce += float((-(t * torch.log(p) + (1 - t) * torch.log(1 - p))).mean())
        dice += 1 - (2 * float((p * t).sum()) + 1) / (float(p.sum()) + float(t.sum()) + 1)
    assert math.isclose(float(losses["mask"]), bce / 2.5, rel_tol=1e-5)
    assert math.isclose(float(losses["dice"]), dice / 2.5, rel_tol=1e-5)


def test_mask_losses_fall_as_the_prediction_improves():
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    good = mask_losses((target * 2 - 1) * 6, target, 1.0, num_points=64)
    bad = mask_losses(torch.zeros(1, 16, 16), target, 1.0, num_points=64)
    assert good["mask"] < bad["mask"] and good["dice"] < bad["dice"]


def matches_and_labels():
    matches = [(torch.tensor([0, 2]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))]
    labels = [torch.tensor([3, 1]), torch.tensor([0])]
    return matches, labels


def test_classification_loss_weighted_mean():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    matches, labels = matches_and_labels()
    targets = [[1, 4, 3], [4, 0, 4]]  # query 0 <- target 1 (class 1), query 2 <- target 0 (3)
    total = weights = 0.0
    for b in range(2):
        for q in range(3):
            w = 0.1 if targets[b][q] == 4 else 1.0
            total += w * -float(F.log_softmax(logits[b, q], -1)[targets[b][q]])
            weights += w
    loss = classification_loss(logits, matches, labels, no_object_weight=0.1)
    assert math.isclose(float(loss), total / weights, rel_tol=1e-6)


def test_region_dropout_ignores_matched_queries_from_the_generator():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    matches, labels = matches_and_labels()
    only_no_object = [(b, q) for b, q in [(0, 1), (1, 0), (1, 2)]]
    expected = sum(-float(F.log_softmax(logits[b, q], -1)[4]) for b, q in only_no_object) / 3
    dropped = classification_loss(logits, matches, labels, region_dropout=1.0)
    assert math.isclose(float(dropped), expected, rel_tol=1e-6)
    # p = 0.5: which matched queries drop follows the generator's draws in (image, query) order
    draws = torch.rand(3, generator=torch.Generator().manual_seed(3)) < 0.5
    keep = [(b, q, c) for (b, q, c), d in zip([(0, 0, 1), (0, 2, 3), (1, 1, 0)], draws) if not d]
    total = sum(-float(F.log_softmax(logits[b, q], -1)[c]) for b, q, c in keep)
    total += 0.1 * expected * 3
    loss = classification_loss(logits, matches, labels, region_dropout=0.5,
                               generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert math.isclose(float(loss), total / (len(keep) + 0.3), rel_tol=1e-6)


def test_padded_columns_take_no_probability():
    logits = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(0))
    matches, labels = matches_and_labels()
    padded = logits.clone()
    padded[0, :, 4] = -math.inf  # a vocabulary shorter than the batch's longest by one
    padded.requires_grad_(True)
    loss = classification_loss(padded, matches[1:], labels[1:])
    loss.backward()
    assert torch.isfinite(padded.grad).all()
    without = torch.cat([logits[:, :, :4], logits[:, :, 5:]], -1)  # the column removed
    assert math.isclose(loss.item(), classification_loss(without, matches[1:], labels[1:]).item(),
                        rel_tol=1e-6)  # fmt: skip


@pytest.mark.parametrize("count", [0, 2])
def test_no_matches(count):
    logits = torch.randn(1, count, 4)
    empty = [(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))]
    loss = classification_loss(logits, empty, [torch.empty(0, dtype=torch.long)])
    assert torch.isfinite(loss)
