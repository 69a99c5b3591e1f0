"""Test-only method "colour_stub": labels each pixel with the class whose synthetic-shapes colour
is nearest (vocaseg.data.synthetic.class_colour). It honours the method contract with no learning,
so evaluator and CLI tests can check exact numbers. Shared by tests/engine and tests/cli."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vocaseg.data.synthetic import class_colour
from vocaseg.models.base import InferenceConfig, SegmentationModel
from vocaseg.models.registry import register_model


@dataclass
class StubConfig(InferenceConfig):
    """``window`` > 0: sliding window of this size, stride window // 2 (unless set)."""

    clip: Any = None  # this stub needs no CLIP

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window and not self.stride:
            self.stride = self.window // 2


class ColourStub(SegmentationModel):
    def __init__(self, cfg: StubConfig) -> None:
        super().__init__()
        self.config = cfg
        self.scale = nn.Parameter(torch.ones(()))  # gives the model a device, dtype and hash
        self.setup_inference((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def encode_vocabulary(self, vocabulary):
        return torch.stack([torch.from_numpy(class_colour(i)) for i in range(len(vocabulary))])

    def forward(self, images, text):
        # -squared distance of each pixel colour to each class colour: [B, K, H, W]
        diff = images[:, None] - text[None, :, :, None, None]
        return -self.scale * diff.pow(2).sum(2)


@register_model("colour_stub", StubConfig, "test-only nearest-colour classifier")
def build_colour_stub(cfg: StubConfig, towers: Any) -> ColourStub:
    return ColourStub(cfg)


def nearest_colour_labels(image, num_classes):
    """Independent reference: argmin colour distance per pixel, numpy."""
    colours = np.stack([class_colour(i) for i in range(num_classes)])
    dist = ((image[:, :, None, :].astype(np.float64) - colours[None, None]) ** 2).sum(-1)
    return dist.argmin(-1)
