"""MAE reconstruction loss: only masked patches count; norm_pix standardises each target patch."""

import pytest
import torch

from vocaseg.losses.reconstruction import masked_patch_mse


def test_only_masked_patches_count():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 12), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 0, 0, 1, 0, 1], [0, 0, 1, 0, 0, 0]], dtype=torch.float32)
    loss = masked_patch_mse(pred, target, mask, norm_pix=False)
    masked = [(b, n) for b in range(2) for n in range(6) if mask[b, n]]
    expected = sum(((pred[b, n] - target[b, n]) ** 2).mean().item() for b, n in masked) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Changing predictions of visible patches changes nothing.
    changed = pred.clone()
    changed[mask == 0] += 100.0
    assert masked_patch_mse(changed, target, mask, norm_pix=False).item() == pytest.approx(
        loss.item()
    )


def test_norm_pix_standardises_each_target_patch():
    torch.manual_seed(0)
    target = torch.randn(1, 3, 48) * 5 + 2
    mean = target.mean(-1, keepdim=True)
    std = (target.var(-1, keepdim=True) + 1e-6).sqrt()  # unbiased variance, as MAE
    mask = torch.ones(1, 3)
    assert masked_patch_mse((target - mean) / std, target, mask).item() == pytest.approx(
        0, abs=1e-10
    )
    assert masked_patch_mse(target, target, mask).item() > 1.0
