"""Sigmoid focal and dice losses and the N_m normaliser against hand computations
(docs/methods/tagclip.md §3)."""

import math

import pytest
import torch

from vocaseg.losses import dice_loss, num_masks, sigmoid_focal_loss


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _focal_pixel(x: float, y: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = _sigmoid(x)
    if y == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def test_focal_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]], [[0.0, 1.0], [-2.0, 4.0]]]])  # [1, 2, 2, 2]
    targets = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]])
    expected = 0.0
    for c in range(2):
        pixels = [
            _focal_pixel(logits[0, c].flatten()[i].item(), targets[0, c].flatten()[i].item())
            for i in range(4)
        ]
        expected += sum(pixels) / 4
    got = sigmoid_focal_loss(logits, targets, num_masks=2.0)
    assert got.item() == pytest.approx(expected / 2, rel=1e-6)


def test_dice_counts_present_maps_only():
    logits = torch.tensor([[[[1.0, -1.0]], [[0.0, 2.0]]]])  # [1, 2, 1, 2]
    targets = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    present = torch.tensor([[True, False]])
    p = [_sigmoid(1.0), _sigmoid(-1.0)]
    expected = 1 - (2 * p[0] + 1) / (p[0] + p[1] + 1 + 1)
    assert dice_loss(logits, targets, 3.0, present).item() == pytest.approx(expected / 3, rel=1e-6)
    p2 = [_sigmoid(0.0), _sigmoid(2.0)]
    both = expected + 1 - 1 / (sum(p2) + 1)
    assert dice_loss(logits, targets, 1.0).item() == pytest.approx(both, rel=1e-6)


def test_num_masks_counts_pairs_and_clamps():
    assert num_masks(torch.tensor([[True, False], [True, True]])).item() == 3.0
    assert num_masks(torch.zeros(2, 3, dtype=torch.bool)).item() == 1.0


def test_perfect_prediction_has_small_loss():
    targets = torch.zeros(1, 1, 4, 4)
    targets[..., :2, :] = 1
    good = (targets * 2 - 1) * 20
    bad = -good
    assert sigmoid_focal_loss(good, targets, 1.0) < 1e-6 < sigmoid_focal_loss(bad, targets, 1.0)
    assert dice_loss(good, targets, 1.0) < 0.01 < dice_loss(bad, targets, 1.0)
