"""CLIP's ModifiedResNet as a dense backbone (GKC, Han et al., ICCV 2023, method section; the
Mask2Former ResNet convention of frozen BatchNorm, Cheng et al., CVPR 2022, appendix A).

:func:`resnet_backbone` gives the student backbone of a CLIP ResNet image tower: a copy of the
tower (or a fresh one of the same shape) without its attention pool, whose ``forward_features``
yields ``res2..res5``. Its BatchNorm layers are turned into one of

- ``"frozen"``: :class:`FrozenBatchNorm2d`, statistics and affine parameters fixed as buffers;
- ``"bn_train"``: plain ``BatchNorm2d`` trained with batch statistics (the released GKC code);
- ``"syncbn"``: ``SyncBatchNorm`` (batch statistics over all processes).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor, nn

from vocaseg.clip.model import ModifiedResNet

BackboneNorm = Literal["frozen", "bn_train", "syncbn"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d in inference form with every tensor a buffer: y = (x − mean)/√(var + eps)·w + b.

    State-dict keys are BatchNorm2d's (``weight``, ``bias``, ``running_mean``, ``running_var``);
    a ``num_batches_tracked`` entry in a loaded state is skipped.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, name).copy_(getattr(bn, name).detach())
        return frozen.to(bn.weight.device)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # [C]
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def convert_norms(module: nn.Module, norm: BackboneNorm) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced as ``norm`` says (in place where possible)."""
    if norm == "bn_train":
        return module
    if norm == "syncbn":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if norm != "frozen":
        raise ValueError(f"unknown backbone norm {norm!r}; use frozen, bn_train or syncbn")
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d.from_batchnorm(child))
        else:
            convert_norms(child, norm)
    return module


def resnet_backbone(
    clip_config: Any, norm: BackboneNorm = "frozen", source: ModifiedResNet | None = None
) -> ModifiedResNet:
    """Student backbone: ``source`` (a CLIP ResNet image tower) copied, or a random tower of
    ``clip_config``'s shape, without ``attnpool``, trainable, norms converted by ``norm``.

    Use ``forward_features(x)`` (res2..res5 at strides 4..32 with 4/8/16/32 × width channels).
    """
    if source is None:
        source = ModifiedResNet(
            layers=clip_config.vision_layers,
            output_dim=clip_config.embed_dim,
            heads=clip_config.vision_heads,
            image_size=clip_config.image_size,
            width=clip_config.vision_width,
        )
        backbone = source
    else:
        pool, source.attnpool = source.attnpool, None  # not copied: the student drops it
        try:
            backbone = copy.deepcopy(source)
        finally:
            source.attnpool = pool
    del backbone.attnpool
    backbone.requires_grad_(True)
    return convert_norms(backbone, norm)


def feature_channels(clip_config: Any) -> tuple[int, int, int, int]:
    """Channels of res2..res5 of a CLIP ResNet of ``clip_config`` (width × 4, 8, 16, 32)."""
    width = clip_config.vision_width
    return width * 4, width * 8, width * 16, width * 32
