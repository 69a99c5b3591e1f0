"""Tiny GKC models, generated COCO-panoptic data and training configs for the GKC tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocaseg.data.caption_nouns import extract_caption_nouns, write_caption_nouns
from vocaseg.data.pipelines import PipelineContext, get_pipeline
from vocaseg.data.synonyms import coco133_class_names
from vocaseg.data.synthetic import make_coco_captions, make_coco_panoptic_dataset
from vocaseg.engine.train_config import TrainConfig, parse_train_config
from vocaseg.models.registry import create_model, get_entry

TINY = get_entry("gkc").tiny
TINY_OPTIONS = {"crop": 64, "teacher_size": 32, "scale_range": [0.9, 1.1]}


def tiny_gkc(training: bool = False, seed: int = 0, **overrides: Any):
    torch.manual_seed(seed)
    return create_model("gkc", TINY, pretrained=False, training=training, **overrides)


def panoptic_root(root: Path, images: int = 4, seed: int = 0, split: str = "train") -> Path:
    make_coco_panoptic_dataset(root, images, size=64, seed=seed, split=split, image_ext=".png")
    return root


def class_word_tagger(text: str) -> list[tuple[str, str]]:
    """A stand-in POS tagger: words of the COCO class names are nouns (NN), the rest DT."""
    nouns = {word for name in coco133_class_names() for word in name.split()}
    words = text.replace(",", " , ").split()
    return [(word, "NN" if word in nouns else "DT") for word in words]


def caption_nouns_file(root: Path, split: str = "train") -> Path:
    """Generated COCO captions of ``root``'s panoptic ``split`` and their nouns file (the output
    of ``vocaseg gkc caption-nouns``) at ``root/caption_nouns_{split}.json``."""
    captions = make_coco_captions(root, split)
    path = root / f"caption_nouns_{split}.json"
    write_caption_nouns(path, extract_caption_nouns(captions, class_word_tagger))
    return path


def train_config(root: Path, output: Path, **sections: dict) -> TrainConfig:
    """A tiny GKC run on ``root``: batch 2, 4 steps, no progress bar or tensorboard."""
    data = {"dataset": "coco_panoptic", "root": str(root), "batch_size": 2}
    data["options"] = {**TINY_OPTIONS, **sections.pop("options", {})}
    config = {
        "model": {"name": "gkc", **TINY, **sections.pop("model", {})},
        "run": {"clip_weights": "random", "output": str(output), "precision": "fp32"},
        "optim": {"lr": 1e-3, "lr_mult": {"backbone": 0.1}, "no_decay": ["norm", "embedding"]},
        "schedule": {"name": "constant", "iterations": 4},
        "data": {**data, **sections.pop("data", {})},
        "logging": {"every": 1, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 2},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return parse_train_config(config)


def pipeline_batch(cfg: TrainConfig, model, size: int = 2, seed: int = 0) -> dict:
    """One collated batch of the gkc_panoptic pipeline, after ``prepare_training``."""
    data = get_pipeline("gkc_panoptic").build(cfg, model, PipelineContext())
    model.prepare_training(data.spec)
    rng = np.random.default_rng(seed)
    return data.collate([data.source.sample(i, rng) for i in range(size)])
