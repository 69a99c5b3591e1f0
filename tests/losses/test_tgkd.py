"""Text-guided distillation loss: zero/positive property, each form against a loop over pairs, image
grouping, finite gradients and the learnable scale."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vocaseg.losses.tgkd import tgkd_loss


def unit(n: int, dim: int = 6, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def batch(seed: int = 0, sizes=(3, 2)):
    student = [unit(n, seed=seed + 10 * i) for i, n in enumerate(sizes)]
    teacher = [unit(n, seed=seed + 10 * i + 1) for i, n in enumerate(sizes)]
    text = [unit(n, seed=seed + 10 * i + 2) for i, n in enumerate(sizes)]
    return student, teacher, text


def dot(a, b) -> float:
    return float((a * b).sum())


def dist(a, b) -> float:
    return math.sqrt(max(float(((a - b) ** 2).sum()), 0.0))


@pytest.mark.parametrize("form", ["released", "paper", "vision_guided"])
def test_zero_when_student_is_teacher_and_text_agrees(form):
    regions = [unit(4, seed=1), unit(2, seed=2)]
    loss = tgkd_loss(regions, regions, regions, torch.tensor(1.0), kd_form=form)
    assert abs(float(loss)) < 1e-5
    student = [regions[0] + 0.3 * unit(4, seed=5), regions[1]]
    assert float(tgkd_loss(student, regions, regions, torch.tensor(1.0), kd_form=form)) > 1e-3


def test_released_form_by_hand():
    student, teacher, text = batch()
    tau = torch.tensor(1.3)
    terms = []
    for s, r, t in zip(student, teacher, text):
        n = len(s)
        terms += [
            (1.3**2 * dot(t[a], t[c]) - dot(s[a], r[c])) ** 2 for a in range(n) for c in range(n)
        ]
        terms += [float(((s[a] - r[a]) ** 2).sum()) for a in range(n)]
    assert len(terms) == 9 + 4 + 5
    loss = tgkd_loss([3 * s for s in student], teacher, text, tau)  # rows get normalised
    assert math.isclose(float(loss), sum(terms) / len(terms), rel_tol=1e-5)
    assert float(tgkd_loss(student, teacher, text, torch.tensor(2.0))) != pytest.approx(float(loss))


@pytest.mark.parametrize("form", ["paper", "vision_guided"])
def test_distance_forms_by_hand(form):
    student, teacher, text = batch(seed=3)
    total = 0.0
    for s, r, t in zip(student, teacher, text):
        guide = t if form == "paper" else s
        n = len(s)
        total += sum(
            abs(dist(s[a], r[c]) - dist(guide[a], guide[c])) for a in range(n) for c in range(n)
        )
    loss = tgkd_loss(student, teacher, text, torch.tensor(5.0), kd_form=form)
    assert math.isclose(float(loss), total / 5, rel_tol=1e-4)


def test_pairs_never_cross_images():
    student, teacher, text = batch(seed=4)
    joint = tgkd_loss(student, teacher, text, torch.tensor(1.0))
    first = tgkd_loss(student[:1], teacher[:1], text[:1], torch.tensor(1.0))
    second = tgkd_loss(student[1:], teacher[1:], text[1:], torch.tensor(1.0))
    # 12 terms in image 0 (9 pairs + 3 direct), 6 in image 1
    assert math.isclose(float(joint), (12 * float(first) + 6 * float(second)) / 18, rel_tol=1e-5)
    merged = tgkd_loss(
        [torch.cat(student)], [torch.cat(teacher)], [torch.cat(text)], torch.tensor(1.0)
    )
    assert not math.isclose(float(joint), float(merged), rel_tol=1e-3)


@pytest.mark.parametrize("form", ["released", "paper", "vision_guided"])
def test_gradients_finite_and_scale_learns(form):
    regions = [unit(3, seed=7)]
    student = [regions[0].clone().requires_grad_(True)]
    tau = torch.tensor(1.5, requires_grad=True)
    tgkd_loss(student, regions, [unit(3, seed=8)], tau, kd_form=form).backward()
    assert torch.isfinite(student[0].grad).all()
    if form == "released":
        assert tau.grad is not None and float(tau.grad) != 0.0


def test_empty_images_and_errors():
    empty = [torch.zeros(0, 6)]
    student, teacher, text = batch()
    assert float(tgkd_loss(empty, empty, empty, torch.tensor(1.0))) == 0.0
    with_empty = tgkd_loss(student + empty, teacher + empty, text + empty, torch.tensor(1.0))
    assert math.isclose(
        float(with_empty), float(tgkd_loss(student, teacher, text, torch.tensor(1.0)))
    )
    with pytest.raises(ValueError, match="kd_form"):
        tgkd_loss(student, teacher, text, torch.tensor(1.0), kd_form="other")
    with pytest.raises(ValueError, match="rows"):
        tgkd_loss(student, [teacher[1], teacher[0]], text, torch.tensor(1.0))
