"""TagCLIP through the training engine on the synthetic shapes dataset: the loss falls, seen
classes are learnt, and inductive training sees neither unseen names nor unseen pixels except via
``label_full`` (ZegCLIP §3.5, TagCLIP §3.3)."""

import csv

import numpy as np
import pytest
import torch

from vocaseg.data.pipelines import register_pipeline, semantic_data
from vocaseg.data.synthetic import ShapesDataset
from vocaseg.engine.evaluator import evaluate
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import Trainer
from vocaseg.errors import ConfigError
from vocaseg.models.tagclip import TagCLIP

TINY_CLIP = dict(
    embed_dim=32, image_size=64, vision_layers=2, vision_width=64, vision_patch_size=8,
    vision_heads=4, text_width=32, text_layers=1, text_heads=2,
)  # fmt: skip
SEEN = (0, 1, 2)  # background, red square, green disc; unseen: blue triangle, yellow bar


@register_pipeline("tagclip_shapes")
def shapes_pipeline(cfg, model, context):
    dataset = ShapesDataset(seen=SEEN, **{"num_images": 16, "size": 64, **cfg.data.options})
    return semantic_data(dataset, cfg, model)


def config(output, steps=300, run=None, **model):
    run = run or {}
    # Head: 2 heads of 16 channels on the 32-d embedding (ViT-B/16's head has 8 of 64). The mask
    # logits are the head mean of q·k/sqrt(d_head); 8 heads of 4 channels learn them far slower.
    return {
        "model": {
            "name": "tagclip", "clip": TINY_CLIP, "pos_grid": 8, "num_prompts": 4, "head_heads": 2,
            "head_ffn": 64, "window": 64, "stride": 64, "short_side": 64, "dropout": 0.0, **model,
        },
        "run": {"seed": 0, "output": str(output), "clip_weights": "random", **run},
        "optim": {"lr": 1e-2, "weight_decay": 0.01},
        "schedule": {"name": "poly", "iterations": steps, "warmup_iters": 2, "min_lr": 1e-5},
        "data": {
            "pipeline": "tagclip_shapes", "batch_size": 4,
            "transform": {"crop_size": 64, "scale": [64, 64], "ratio_range": [0.9, 1.1]},
            "zero_shot": {"setting": model.get("setting", "inductive")},
        },
        "checkpoint": {"every": 1000},
        "logging": {"every": 1, "tensorboard": False, "progress": False},
    }  # fmt: skip


class Spy:
    """Records the names TagCLIP encodes and the batches its forward_train receives."""

    def __init__(self, monkeypatch):
        self.names, self.batches = [], []
        encode, forward_train = TagCLIP.encode_vocabulary, TagCLIP.forward_train

        def spy_encode(model, vocabulary):
            self.names.append(list(vocabulary.queries))
            return encode(model, vocabulary)

        def spy_forward(model, batch):
            self.batches.append({k: v.clone() for k, v in batch.items() if "label" in k})
            return forward_train(model, batch)

        monkeypatch.setattr(TagCLIP, "encode_vocabulary", spy_encode)
        monkeypatch.setattr(TagCLIP, "forward_train", spy_forward)


@pytest.fixture(autouse=True)
def _text_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))


def background_only_miou_seen(dataset):
    """mIoU over the seen classes (percent) of predicting the background (class 0) everywhere:
    background IoU = its share of the labelled pixels, every seen shape class IoU = 0."""
    labels = np.concatenate([dataset[i]["label"].ravel() for i in range(len(dataset))])
    labels = labels[labels != dataset.ignore_index]
    return 100 * float((labels == 0).mean()) / len(SEEN)


def test_inductive_training_learns_seen_classes_without_unseen_names(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    trainer = Trainer(parse_train_config(config(tmp_path)))
    trainer.train()
    assert spy.names == [["background", "red square", "green disc"]]
    for batch in spy.batches:
        assert set(batch) == {"label", "label_full"}
        assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 255}
        unseen = torch.isin(batch["label_full"], torch.tensor([3, 4]))
        assert (batch["label"][unseen] == 255).all()
    with open(tmp_path / "log.csv", encoding="utf-8") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3

    val = ShapesDataset(num_images=6, size=64, seed=1, split="val", seen=SEEN)
    result = evaluate(trainer.model, val, seen=SEEN, progress=False)
    summary = result.summaries["mmseg"]
    # Every seen class is segmented (IoU in percent), the shapes included, and the seen mIoU is
    # far above the ~28 % that predicting the background everywhere already scores.
    assert all(summary["IoU"][c] > 50 for c in SEEN), summary["IoU"]
    assert summary["mIoU_seen"] > background_only_miou_seen(val) + 40
    assert any("unseen-pixel locations" in note for note in result.record["notes"])


def test_paper_trusty_target_needs_no_unseen_pixels(tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    trainer = Trainer(parse_train_config(config(tmp_path, steps=2, trusty_target="seen")))
    trainer.train()
    assert all(set(batch) == {"label"} for batch in spy.batches)
    assert trainer.model.result_notes() == []  # the paper's variant needs no caveat


def test_setting_mismatch_and_unknown_unseen_class_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.zero_shot\.setting"):
        cfg = config(tmp_path, setting="transductive")
        cfg["data"]["zero_shot"]["setting"] = "inductive"
        Trainer(parse_train_config(cfg))
    cfg = config(tmp_path)
    cfg["data"]["zero_shot"]["unseen"] = ["purple hexagon"]
    with pytest.raises(ConfigError, match="purple hexagon"):
        Trainer(parse_train_config(cfg))


def test_transductive_start_must_be_inductive_with_the_same_split(tmp_path):
    inductive = parse_train_config(config(tmp_path / "ind", steps=1))
    start = Trainer(inductive).train().parent / "checkpoints" / "ckpt_00000001.pt"
    supervised = config(tmp_path / "sup", steps=1, setting="supervised", trusty_token=False)
    Trainer(parse_train_config(supervised)).train()
    for source, unseen in ((start, [4]), (tmp_path / "sup/checkpoints/ckpt_00000001.pt", [])):
        init = {"init": str(source), "init_allow_missing": ["head.trusty_*"]}
        cfg = config(tmp_path / "trans", setting="transductive", run=init)
        cfg["data"]["zero_shot"]["unseen"] = unseen
        with pytest.raises(ConfigError, match="inductive checkpoint with this run's unseen"):
            Trainer(parse_train_config(cfg))
    cfg = config(tmp_path / "trans", setting="transductive", run={"init": str(start)})
    Trainer(parse_train_config(cfg))  # the inductive start with the same split is accepted
