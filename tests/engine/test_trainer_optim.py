"""Optimiser groups and learning-rate schedules against the recipes' formulas
(poly + warm-up: docs/methods/tagclip.md §6; cosine + warm-up: MAE's ``util/lr_sched.py``,
docs/methods/zeroseg.md "Settings"; step decay: GKC's released Mask2Former recipe)."""

from __future__ import annotations

import math

import pytest
from torch import nn

from vocaseg.engine.optim import build_optimizer, build_schedule, param_groups
from vocaseg.engine.train_config import OptimConfig, ScheduleConfig


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.embed = nn.Embedding(3, 4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


def groups_by_name(model: nn.Module, cfg: OptimConfig) -> dict[str, tuple[float, float]]:
    return {
        name: (group["lr"], group["weight_decay"])
        for group in param_groups(model, cfg)
        for name in group["names"]
    }


def test_tagclip_default_decays_everything_trainable():
    groups = groups_by_name(Net(), OptimConfig(lr=2e-4, weight_decay=0.01))
    assert set(groups) == {
        "backbone.0.weight",
        "backbone.0.bias",
        "backbone.1.weight",
        "backbone.1.bias",
        "embed.weight",
        "head.weight",
        "head.bias",
    }  # frozen parameters never reach the optimiser
    assert set(groups.values()) == {(2e-4, 0.01)}


def test_gkc_backbone_multiplier_and_no_decay_on_norms_and_embeddings():
    cfg = OptimConfig(
        lr=3e-4, weight_decay=0.05, lr_mult={"backbone": 0.1}, no_decay=["norm", "embedding"]
    )
    groups = groups_by_name(Net(), cfg)
    assert groups["backbone.0.weight"] == pytest.approx((3e-5, 0.05))
    assert groups["backbone.0.bias"] == pytest.approx((3e-5, 0.05))
    assert groups["backbone.1.weight"] == pytest.approx((3e-5, 0.0))
    assert groups["embed.weight"] == pytest.approx((3e-4, 0.0))
    assert groups["head.bias"] == pytest.approx((3e-4, 0.05))


def test_zeroseg_no_decay_on_1d_and_longest_key_wins():
    cfg = OptimConfig(
        lr=1.0, weight_decay=0.05, no_decay=["1d"], lr_mult={"backbone": 0.1, "backbone.1": 0.5}
    )
    groups = groups_by_name(Net(), cfg)
    assert groups["head.bias"] == (1.0, 0.0) and groups["head.weight"] == (1.0, 0.05)
    assert groups["backbone.1.weight"] == (0.5, 0.0)
    assert groups["backbone.0.weight"] == pytest.approx((0.1, 0.05))
    optimizer = build_optimizer(Net(), cfg)
    assert all(g["initial_lr"] == g["lr"] for g in optimizer.param_groups)


def test_poly_with_linear_warmup_is_tagclip_formula():
    cfg = ScheduleConfig(name="poly", iterations=20000, warmup_iters=1500, min_lr=1e-6)
    schedule = build_schedule(cfg, base_lr=2e-4, steps_per_epoch=100)
    for t in (0, 1, 700, 1499, 1500, 10000, 19999, 20000):
        lr = (2e-4 - 1e-6) * (1 - t / 20000) ** 0.9 + 1e-6
        if t < 1500:
            lr *= 1 - (1 - t / 1500) * (1 - 1e-6)
        assert schedule(t) * 2e-4 == pytest.approx(lr, rel=1e-12), t


def test_cosine_with_warmup_in_epochs_is_mae_schedule():
    cfg = ScheduleConfig(name="cosine", epochs=80, warmup_epochs=20)
    schedule = build_schedule(cfg, base_lr=2.4e-3, steps_per_epoch=312)
    assert (schedule.total, schedule.warmup) == (24960, 6240)
    assert schedule(0) == 0.0 and schedule(3120) == pytest.approx(0.5)
    for t in (6240, 10000, 24959):
        expected = 0.5 * (1 + math.cos(math.pi * (t - 6240) / (24960 - 6240)))
        assert schedule(t) == pytest.approx(expected)


def test_step_decay_is_gkc_schedule():
    cfg = ScheduleConfig(name="step", iterations=50000, milestones=[40000, 45000], gamma=0.1)
    schedule = build_schedule(cfg, base_lr=3e-4, steps_per_epoch=1)
    assert [schedule(t) for t in (0, 39999, 40000, 44999)] == pytest.approx([1, 1, 0.1, 0.1])
    assert schedule(45000) == pytest.approx(0.01)
