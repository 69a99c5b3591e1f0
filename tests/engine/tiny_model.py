"""Test-only method "tiny_pixel": a per-pixel 1x1-conv classifier trained with the engine.

Its loss sums cross-entropy over labelled pixels and divides by ``batch["num_targets"]`` (the
trainer's global count of labelled pixels), so it equals the global-batch mean however the batch is
split over processes and micro-batches. Dropout makes the training RNG matter for resume tests.
The "shapes_memory" pipeline feeds the in-memory shapes dataset through the semantic pipeline's
transform and zero-shot label handling (``data.options``: num_images, size, seed).
Imported by the trainer through ``run.imports: [tiny_model]`` (tests/engine on ``sys.path``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vocaseg.constants import IMAGENET_MEAN, IMAGENET_STD
from vocaseg.data.pipelines import register_pipeline, semantic_data
from vocaseg.data.synthetic import ShapesDataset
from vocaseg.errors import ConfigError
from vocaseg.models.base import InferenceConfig, SegmentationModel, TrainSpec
from vocaseg.models.registry import register_model


@dataclass
class TinyConfig(InferenceConfig):
    num_classes: int = 5
    hidden: int = 8
    dropout: float = 0.1
    needs_full: bool = False  # ask the pipeline for label_full (as TagCLIP's trusty target)
    clip: Any = None  # this model needs no CLIP
    nan_steps: list[int] = field(default_factory=list)  # optimiser steps (1-based) with a NaN loss
    sleep: float = 0.0  # seconds per training forward (to interrupt a run from outside)


class TinyPixelModel(SegmentationModel):
    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.config = self.cfg = cfg
        self.setup_inference(IMAGENET_MEAN, IMAGENET_STD)
        self.stem = nn.Conv2d(3, cfg.hidden, 1)
        self.norm = nn.GroupNorm(1, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Conv2d(cfg.hidden, cfg.num_classes, 1)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.received: list[dict[str, Any]] = []  # what forward_train saw (keys and labels)
        self.setting: str | None = None
        self.step = 0

    def encode_vocabulary(self, vocabulary) -> torch.Tensor:
        return torch.zeros(len(vocabulary.queries), 1)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(F.relu(self.norm(self.stem(images)))))

    def train_needs(self) -> frozenset[str]:
        return frozenset({"label_full"}) if self.cfg.needs_full else frozenset()

    def prepare_training(self, spec: TrainSpec) -> None:
        vocabulary = spec.vocabulary
        trained = len(vocabulary.seen) if spec.zero_shot == "inductive" else len(vocabulary)
        if trained != self.cfg.num_classes:
            raise ConfigError(f"model.num_classes must be {trained} for this dataset and setting")
        self.setting = spec.setting

    def before_train_step(self, step: int, total: int) -> None:
        self.step = step + 1

    def count_targets(self, batch: dict[str, Any]) -> float:
        return float((batch["label"] != 255).sum())

    def forward_train(self, batch: dict[str, Any]) -> torch.Tensor:
        self.received.append({"keys": sorted(batch), "label": batch["label"].clone()})
        time.sleep(self.cfg.sleep)
        return self(batch["image"], torch.zeros(1, 1))

    def loss(self, batch: dict[str, Any], outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(outputs, batch["label"], ignore_index=255, reduction="sum")
        total = ce / batch["num_targets"]
        if self.step in self.cfg.nan_steps:
            total = total * float("nan")
        return {"loss": total, "ce": total.detach()}


@register_model("tiny_pixel", TinyConfig, "test-only per-pixel classifier", trained=True)
def build_tiny(cfg: TinyConfig, towers: Any) -> TinyPixelModel:
    return TinyPixelModel(cfg)


@register_pipeline("shapes_memory")
def shapes_memory(cfg, model, context):
    options = {"num_images": 16, "size": 32, "seed": 0, **cfg.data.options}
    dataset = ShapesDataset(seen=(0, 1, 2), **options)
    return semantic_data(dataset, cfg, model)


def tiny_train_config(output, steps: int = 8, **sections) -> dict:
    """A complete training config for "tiny_pixel" on in-memory shapes; ``sections`` update it."""
    config = {
        "model": {"name": "tiny_pixel", "num_classes": 5},
        "run": {"seed": 0, "output": str(output), "imports": ["tiny_model"]},
        "optim": {"lr": 0.05, "weight_decay": 0.01},
        "schedule": {"name": "poly", "iterations": steps, "warmup_iters": 2, "min_lr": 1e-4},
        "data": {
            "pipeline": "shapes_memory",
            "batch_size": 2,
            "transform": {"crop_size": 24, "scale": [32, 32], "ratio_range": [0.75, 1.25]},
            "options": {"num_images": 8, "size": 32},
        },
        "checkpoint": {"every": 4, "keep_last": 2},
        "logging": {"every": 1, "tensorboard": False, "progress": False},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config
