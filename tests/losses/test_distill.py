"""ZeroSeg distillation losses against brute-force loops: multi-scale L1 over all views, segment
matching to the L1-nearest local view (never v1, not Hungarian), and their options."""

import pytest
import torch

from vocaseg.losses.distill import match_segments, multiscale_l1, segment_matching_l1


def _d(a: torch.Tensor, b: torch.Tensor, reduce: str) -> float:
    diff = (a - b).abs().sum().item()
    return diff / a.numel() if reduce == "mean" else diff


def _normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("target_norm", ["l2", "none"])
def test_segment_matching_equals_brute_force_without_v1(reduce, target_norm):
    torch.manual_seed(0)
    g, targets = torch.randn(3, 8, 12), torch.randn(3, 30, 12)
    v = _normalise(targets) if target_norm == "l2" else targets
    total, choices = 0.0, []
    for b in range(3):
        for i in range(8):
            dists = [_d(g[b, i], v[b, j], reduce) for j in range(1, 30)]  # j = 2..30 in the paper
            total += min(dists)
            choices.append(1 + dists.index(min(dists)))
    loss = segment_matching_l1(g, targets, target_norm=target_norm, l1_reduce=reduce)
    assert loss.item() == pytest.approx(total / 3, rel=1e-5)
    _, index = match_segments(g, targets, target_norm=target_norm, l1_reduce=reduce)
    assert index.flatten().tolist() == choices


def test_matching_never_picks_the_full_image_view_and_may_share_views():
    torch.manual_seed(0)
    targets = torch.randn(1, 5, 6)
    g = targets[:, [0, 0, 2]].clone()  # two tokens equal v1 exactly, one equals view 3
    _, index = match_segments(g, targets, target_norm="none")
    assert 0 not in index.tolist()[0]
    assert index[0, 2].item() == 2
    assert index[0, 0].item() == index[0, 1].item()  # no one-to-one constraint


def test_matching_gradient_flows_into_g_only():
    g = torch.randn(2, 4, 6, requires_grad=True)
    targets = torch.randn(2, 10, 6, requires_grad=True)
    segment_matching_l1(g, targets).backward()
    assert g.grad.abs().sum() > 0 and targets.grad is None


@pytest.mark.parametrize("views", ["all", "global"])
@pytest.mark.parametrize("pred_norm", [False, True])
def test_multiscale_equals_brute_force(views, pred_norm):
    torch.manual_seed(0)
    z, targets = torch.randn(4, 12), torch.randn(4, 30, 12)
    v = _normalise(targets)
    zz = _normalise(z) if pred_norm else z
    count = 30 if views == "all" else 1
    expected = sum(_d(zz[b], v[b, k], "mean") for b in range(4) for k in range(count)) / 4
    loss = multiscale_l1(z, targets, pred_norm=pred_norm, views=views)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_losses_fall_when_optimised():
    """g can reach a local view exactly; z only the per-dim median of the 30 views."""
    torch.manual_seed(0)
    targets = torch.randn(2, 30, 16)
    z = torch.zeros(2, 16, requires_grad=True)
    g = torch.randn(2, 8, 16, requires_grad=True)
    optimiser = torch.optim.Adam([z, g], lr=0.02)
    start = multiscale_l1(z, targets).item(), segment_matching_l1(g, targets).item()
    for _ in range(150):
        loss = multiscale_l1(z, targets) + segment_matching_l1(g, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    end = multiscale_l1(z, targets).item(), segment_matching_l1(g, targets).item()
    assert end[0] < start[0] and end[1] < 0.1 * start[1]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="target_norm"):
        multiscale_l1(torch.zeros(1, 4), torch.ones(1, 3, 4), target_norm="l1")
    with pytest.raises(ValueError, match="l1_reduce"):
        segment_matching_l1(torch.zeros(1, 2, 4), torch.ones(1, 3, 4), l1_reduce="max")
