"""GKC through the shared trainer: exact resumption, the saved model folder, and (slow) the CPU
quickstart configs/gkc_synthetic.yaml learning every loss term and segmenting its classes."""

from __future__ import annotations

import csv

import pytest
import torch

from gkc_helpers import panoptic_root, train_config
from train_helpers import crash_during_step
from vocaseg.engine.checkpoint import list_checkpoints
from vocaseg.engine.train_config import load_train_config
from vocaseg.engine.trainer import Trainer
from vocaseg.models.folder import load_model
from vocaseg.text.vocab import Vocabulary

TERMS = ("loss_mask", "loss_dice", "loss_plain", "loss_syn", "loss_kd")


def rows(output) -> list[dict[str, str]]:
    with open(output / "log.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_resume_after_a_crash_is_bit_identical(tmp_path):
    root = panoptic_root(tmp_path / "data", images=4)
    reference = Trainer(train_config(root, tmp_path / "a"))
    reference.train()

    with crash_during_step(3):
        Trainer(train_config(root, tmp_path / "b")).train()
    assert [p.name for p in list_checkpoints(tmp_path / "b/checkpoints")] == ["ckpt_00000002.pt"]
    resumed = Trainer(train_config(root, tmp_path / "b"), resume="auto")
    resumed.train()
    assert resumed.resumed_from.name == "ckpt_00000002.pt"
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_the_trained_model_folder_gives_identical_scores(tmp_path):
    root = panoptic_root(tmp_path / "data", images=4)
    trainer = Trainer(train_config(root, tmp_path / "run", schedule={"iterations": 2}))
    final = trainer.train()
    loaded = load_model(final)
    record = loaded.training_record["dataset"]
    assert record["synonyms_sha256"] and record["class_names"][131] == "wall"
    vocabulary = Vocabulary.from_names(["person", "sky-other-merged", "grass"])
    images = torch.randn(2, 3, 64, 96)
    trained = trainer.model.eval()
    with torch.no_grad():
        want = trained(images, trained.encode_vocabulary(vocabulary))
        got = loaded(images, loaded.encode_vocabulary(vocabulary))
    assert torch.equal(got, want)


@pytest.mark.slow
def test_quickstart_learns_every_term_and_segments_its_classes(tmp_path):
    cfg = load_train_config(
        "configs/gkc_synthetic.yaml",
        [f"data.root={tmp_path / 'data'}", f"eval.root={tmp_path / 'data'}",
         "logging.progress=false"],
    )  # fmt: skip
    Trainer(cfg, output=tmp_path / "run").train()
    log = rows(tmp_path / "run")
    steps = [r for r in log if r["loss"]]
    for term in TERMS:
        first = float(steps[0][term])
        last = sum(float(r[term]) for r in steps[-5:]) / 5
        assert last < 0.8 * first, term
    miou = float(next(r["eval/mIoU"] for r in log if r.get("eval/mIoU")))
    assert miou > 50  # 6 classes present; always answering the largest one scores under 10


def test_captions_add_a_grounding_term_that_falls(tmp_path):
    from gkc_helpers import caption_nouns_file

    root = panoptic_root(tmp_path / "data", images=4)
    nouns = caption_nouns_file(root)
    cfg = train_config(
        root,
        tmp_path / "run",
        options={"captions": str(nouns)},
        model={"kd_weight": 0.0, "syn_weight": 0.0},
        data={"batch_size": 4},
        schedule={"iterations": 12},
        optim={"lr": 3e-3, "lr_mult": {"backbone": 0.1, "logit_scale": 10.0}},
    )
    Trainer(cfg).train()
    steps = [r for r in rows(tmp_path / "run") if r["loss"]]
    ground = [float(r["loss_ground"]) for r in steps]
    assert all(g > 0 for g in ground)
    assert sum(ground[-3:]) / 3 < sum(ground[:3]) / 3
