"""Training-engine overhead: ``vocaseg.engine.Trainer`` steps/s vs a bare PyTorch loop.

Both run the same small conv segmentation net with the same AdamW settings and batch size. The bare
loop reuses one pre-made batch (no data loading); the trainer reads the in-memory shapes dataset
through the full "semantic" pipeline (MMSeg-style augmentation, zero-shot label mapping, collate),
schedules the lr, logs and writes a checkpoint at the end. The ratio is what the engine costs per
step on top of the model's own forward/backward/update.

    python benchmarks/bench_train.py [--steps 30] [--size 128] [--batch 4] [--width 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vocaseg.data.pipelines import register_pipeline, semantic_data
from vocaseg.data.synthetic import ShapesDataset
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import Trainer
from vocaseg.models.base import SegmentationModel
from vocaseg.models.registry import register_model


@dataclass
class BenchConfig:
    width: int = 64
    num_classes: int = 5
    clip: Any = None  # this benchmark model needs no CLIP


class ConvSeg(SegmentationModel):
    def __init__(self, cfg: BenchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.GroupNorm(8, w),
            nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.GroupNorm(8, w),
            nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, cfg.num_classes, 1),
        )

    def forward_train(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.net(batch["image"])

    def loss(self, batch: dict[str, Any], outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, batch["label"], ignore_index=255)}

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)


register_model("bench_conv", BenchConfig, "benchmark conv net")(lambda cfg, clip: ConvSeg(cfg))


@register_pipeline("bench_shapes")
def bench_shapes(cfg, model):
    dataset = ShapesDataset(num_images=64, size=cfg.data.options["size"], seed=0)
    return semantic_data(dataset, cfg, model)


def bare_loop(model: nn.Module, batch: dict[str, torch.Tensor], steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    tic = time.perf_counter()
    for _ in range(steps):
        loss = model.loss(batch, model.forward_train(batch))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    crop = args.size
    with tempfile.TemporaryDirectory() as out:
        config = {
            "model": {"name": "bench_conv", "width": args.width},
            "run": {"output": out},
            "optim": {"lr": 1e-3, "weight_decay": 0.01},
            "schedule": {"name": "poly", "iterations": args.steps},
            "data": {
                "pipeline": "bench_shapes",
                "batch_size": args.batch,
                "transform": {"crop_size": crop, "scale": [crop, crop]},
                "options": {"size": args.size},
            },
            "checkpoint": {"every": args.steps},
            "logging": {"every": 10, "tensorboard": False, "progress": False},
        }
        trainer = Trainer(parse_train_config(config))
        batch = trainer.data.collate_fn(
            [trainer.data.source.sample(i, np.random.default_rng(i)) for i in range(args.batch)]
        )
        bare_model = ConvSeg(BenchConfig(width=args.width))
        bare_loop(bare_model, batch, 3)  # warm-up
        bare = bare_loop(bare_model, batch, args.steps)
        tic = time.perf_counter()
        trainer.train()
        engine = args.steps / (time.perf_counter() - tic)
    print(f"machine: {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"conv net width {args.width}, batch {args.batch} x {args.size}px, {args.steps} steps")
    print(f"bare loop     : {bare:7.2f} it/s")
    print(f"vocaseg engine: {engine:7.2f} it/s  (bare / engine = {bare / engine:.2f}x)")


if __name__ == "__main__":
    main()
