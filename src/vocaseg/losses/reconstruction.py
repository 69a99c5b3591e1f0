"""MAE's pixel reconstruction loss (He et al., CVPR 2022, §3 "Reconstruction target"), as ZeroSeg
uses it (Chen et al., ICCV 2023, §3.2): mean squared error per patch, averaged over the *masked*
patches only; with ``norm_pix`` each target patch is standardised by its own mean and (unbiased)
variance first.
"""

from __future__ import annotations

from torch import Tensor


def masked_patch_mse(
    pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True, eps: float = 1e-6
) -> Tensor:
    """Loss for predicted patches ``pred`` [B, N, P], target patches ``target`` [B, N, P] (see
    ``vocaseg.models.layers.mae.patchify``) and ``mask`` [B, N] (1 = removed, counted)."""
    pred, target, mask = pred.float(), target.float(), mask.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # [B, N]
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)
