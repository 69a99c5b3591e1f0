"""Hungarian matcher: optimal against brute force, cost terms against a hand computation, empty
targets, and randomness only from the passed generator."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from vocaseg.models.layers.matcher import HungarianMatcher


def bilinear(image: torch.Tensor, x: float, y: float) -> float:
    height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for cx in (x0, x0 + 1):
        for cy in (y0, y0 + 1):
            if 0 <= cx < width and 0 <= cy < height:
                total += (1 - abs(px - cx)) * (1 - abs(py - cy)) * float(image[cy, cx])
    return total


def inputs(queries: int = 4, targets: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(1, queries, 6, generator=generator)
    mask_logits = torch.randn(1, queries, 4, 4, generator=generator) * 3
    masks = torch.rand(targets, 8, 8, generator=generator) > 0.5
    labels = torch.randint(0, 5, (targets,), generator=generator)
    return class_logits, mask_logits, [{"labels": labels, "masks": masks}]


def brute_force(cost: np.ndarray) -> float:
    queries, targets = cost.shape
    return min(
        sum(cost[q, t] for t, q in enumerate(perm))
        for perm in itertools.permutations(range(queries), targets)
    )


def test_linear_sum_assignment_is_optimal_on_small_matrices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cost = rng.normal(size=(int(rng.integers(3, 6)), int(rng.integers(1, 4))))
        rows, cols = linear_sum_assignment(cost)
        assert math.isclose(cost[rows, cols].sum(), brute_force(cost), rel_tol=1e-9)


def test_matches_are_optimal_for_the_matcher_cost():
    matcher = HungarianMatcher(num_points=50)
    for seed in range(5):
        class_logits, mask_logits, targets = inputs(queries=5, targets=3, seed=seed)
        cost = matcher.cost_matrix(class_logits[0], mask_logits[0], targets[0]["labels"],
                                   targets[0]["masks"], torch.Generator().manual_seed(seed))  # fmt: skip
        (rows, cols), = matcher(class_logits, mask_logits, targets,
                                generator=torch.Generator().manual_seed(seed))  # fmt: skip
        assert rows.dtype == torch.long and sorted(cols.tolist()) == [0, 1, 2]
        assert len(set(rows.tolist())) == 3 and rows.tolist() == sorted(rows.tolist())
        assert math.isclose(float(cost[rows, cols].sum()), brute_force(cost.numpy()), rel_tol=1e-6)


def test_cost_terms_match_a_hand_computation():
    class_logits, mask_logits, targets = inputs(queries=3, targets=2)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=6)
    cost = matcher.cost_matrix(class_logits[0], mask_logits[0], targets[0]["labels"],
                               targets[0]["masks"], torch.Generator().manual_seed(9))  # fmt: skip
    coords = torch.rand(1, 6, 2, generator=torch.Generator().manual_seed(9))[0].tolist()
    for q in range(3):
        probs = torch.softmax(class_logits[0, q].double(), -1)
        x = [bilinear(mask_logits[0, q], *c) for c in coords]
        for n in range(2):
            t = [bilinear(targets[0]["masks"][n].float(), *c) for c in coords]
            sig = [1 / (1 + math.exp(-v)) for v in x]
            bce = sum(-(ti * math.log(s) + (1 - ti) * math.log(1 - s)) for s, ti in zip(sig, t)) / 6
            dice = 1 - (2 * sum(s * ti for s, ti in zip(sig, t)) + 1) / (sum(sig) + sum(t) + 1)
            expected = 2 * -float(probs[targets[0]["labels"][n]]) + 5 * bce + 5 * dice
            assert math.isclose(float(cost[q, n]), expected, rel_tol=1e-4), (q, n)


def test_empty_targets_and_batches():
    class_logits, mask_logits, targets = inputs()
    empty = {"labels": torch.empty(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8)}
    both = HungarianMatcher(num_points=20)(
        class_logits.repeat(2, 1, 1), mask_logits.repeat(2, 1, 1, 1), [empty, targets[0]]
    )
    assert both[0][0].numel() == 0 and both[0][1].numel() == 0
    assert both[1][0].numel() == 3


def test_randomness_comes_from_the_generator():
    class_logits, mask_logits, targets = inputs(queries=6, targets=4, seed=3)
    matcher = HungarianMatcher(num_points=3)
    runs = [
        matcher(class_logits, mask_logits, targets, generator=torch.Generator().manual_seed(1))
        for _ in range(2)
    ]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
