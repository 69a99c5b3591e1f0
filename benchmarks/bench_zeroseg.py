"""ZeroSeg speed, three numbers: a training step with cached teacher targets vs the teacher run
inside the step (side by side, interleaved); the teacher-cache build throughput; inference
images/s at a 448 short side (448 windows, stride 224).

The paper's shapes (Chen et al., ICCV 2023: a CLIP ViT-L/14 teacher, 24 layers of width 1024,
patch 14, 30 views of 224 px; a ViT-B/16 MAE student with its 8-block decoder and the grouping
head) with every width divided by ``--shrink`` so that it runs on a CPU; depths, patch sizes,
token counts, views and so the teacher : student cost ratio are kept. Random weights, fp32.
Generated images (``vocaseg.data.synthetic.make_image_folder``) go through the ``image_folder``
pipeline exactly as in training.

    python benchmarks/bench_zeroseg.py [--shrink 8] [--batch 2] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocaseg.data.pipelines import PipelineContext, get_pipeline
from vocaseg.data.synthetic import make_image_folder
from vocaseg.engine.train_config import parse_train_config
from vocaseg.inference.predict import predict_scores
from vocaseg.models.registry import create_model
from vocaseg.text.vocab import Vocabulary

VOC = "aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, table, dog, horse, \
motorbike, person, plant, sheep, sofa, train, monitor"


def model_config(shrink: int) -> dict[str, Any]:
    """The paper's student and teacher with widths / ``shrink`` (heads keep 64-wide or less)."""

    def heads(width: int) -> int:
        return max(1, width // 64)

    teacher, student = 1024 // shrink, 768 // shrink
    decoder, embed = 512 // shrink, 768 // shrink
    return {
        "clip": {
            "embed_dim": embed, "image_size": 224, "vision_layers": 24, "vision_width": teacher,
            "vision_patch_size": 14, "vision_heads": heads(teacher), "text_width": embed,
            "text_layers": 12, "text_heads": heads(embed),
        },
        "embed_dim": student, "depth": 12, "num_heads": heads(student),
        "decoder_embed_dim": decoder, "decoder_depth": 8, "decoder_num_heads": heads(decoder),
        "seg_dim": student, "seg_num_heads": heads(student), "proj_hidden_dim": 4096 // shrink,
        "templates": "single",
    }  # fmt: skip


def training_setup(root: Path, mode: str, shrink: int, batch: int) -> tuple[Any, dict, Any]:
    """(model, one collated batch, optimiser) for ``mode`` ("cache" or "online")."""
    config = {
        "model": {"name": "zeroseg", **model_config(shrink), "teacher_mode": mode},
        "run": {"clip_weights": "random", "output": str(root / "run")},
        "schedule": {"iterations": 1},
        "data": {"root": str(root / "images"), "options": {"cache": str(root / "cache")}},
    }
    cfg = parse_train_config(config)
    torch.manual_seed(0)  # the same weights in both modes
    model = create_model("zeroseg", cfg.model_options, training=True).train()
    pipeline = get_pipeline("image_folder")
    data = pipeline.build(cfg, model, PipelineContext())
    rng = np.random.default_rng(0)
    samples = data.collate([data.source.sample(i, rng) for i in range(batch)])
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95)
    )
    return model, samples, optimizer


def train_step(model: Any, batch: dict, optimizer: torch.optim.Optimizer) -> None:
    loss = model.loss(batch, model.forward_train(batch))["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build_cache(root: Path, shrink: int) -> tuple[float, int, int]:
    """Seconds to build the cache of every image under ``root/images``, images, views."""
    config = {
        "model": {"name": "zeroseg", **model_config(shrink)},
        "run": {"clip_weights": "random", "output": str(root / "run")},
        "schedule": {"iterations": 1},
        "data": {
            "root": str(root / "images"),
            "options": {"cache": str(root / "cache"), "cache_batch_size": 4},
            "num_workers": 0,
        },
        "logging": {"progress": False},
    }
    cfg = parse_train_config(config)
    torch.manual_seed(0)
    model = create_model("zeroseg", cfg.model_options, training=True)
    views = model.teacher_setup().views.num_views
    images = len(list((root / "images").rglob("*.JPEG")))
    tic = time.perf_counter()
    get_pipeline("image_folder").prepare(cfg, model, PipelineContext())
    return time.perf_counter() - tic, images, views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shrink", type=int, default=8, help="divide every width by this")
    parser.add_argument("--batch", type=int, default=2, help="images per training step")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--cache-images", type=int, default=8)
    parser.add_argument("--infer-images", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, widths / {args.shrink} "
        f"(teacher {1024 // args.shrink}x24 layers, student {768 // args.shrink}x12), fp32 CPU"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        count = max(args.cache_images, args.batch)
        make_image_folder(root / "images", count, sizes=((375, 500), (500, 375)), seed=0)

        seconds, images, views = build_cache(root, args.shrink)
        print("\n| teacher cache build | images/s | teacher forwards/s |")
        print("|---|---|---|")
        print(f"| {images} images x {views} views | {images / seconds:.2f} | "
              f"{images * views / seconds:.1f} |")  # fmt: skip

        runs = {
            mode: training_setup(root, mode, args.shrink, args.batch)
            for mode in ("cache", "online")
        }
        times: dict[str, list[float]] = {mode: [] for mode in runs}
        for mode in runs:
            train_step(*runs[mode])  # warm-up
        order = list(runs)
        for i in range(args.repeats):
            for mode in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
                tic = time.perf_counter()
                train_step(*runs[mode])
                times[mode].append(time.perf_counter() - tic)
        cached, online = (statistics.median(times[m]) * 1e3 for m in ("cache", "online"))
        print(f"\n| training step (batch {args.batch}, 224 px, mask 0.6) | ms | ratio |")
        print("|---|---|---|")
        print(f"| cached targets | {cached:.0f} | 1.00 |")
        print(f"| online teacher | {online:.0f} | {online / cached:.2f} |")

        model = runs["cache"][0].eval()
        model.update_settings(short_side=448, window=448, stride=224)
        vocabulary = Vocabulary.parse(VOC)
        with torch.inference_mode():
            text = model.text_for(vocabulary)
            image = torch.rand(1, 3, 375, 500) * 255  # -> 448 x 597: two windows
            predict_scores(model, image, text, vocabulary)  # warm-up
            tic = time.perf_counter()
            for _ in range(args.infer_images):
                predict_scores(model, image, text, vocabulary)
            rate = args.infer_images / (time.perf_counter() - tic)
        print("\n| inference (448 short side, 448/224 windows, 20 classes) | images/s |")
        print("|---|---|")
        print(f"| 375 x 500 image -> 448 x 597 | {rate:.2f} |")


if __name__ == "__main__":
    main()
