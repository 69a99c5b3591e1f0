"""The training engine on the test-only "tiny_pixel" method: learning, exact resumption,
accumulation, zero-shot labels and the errors raised before training starts."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_model

from train_helpers import crash_during_step
from vocaseg.engine import trainer as trainer_module
from vocaseg.engine.checkpoint import list_checkpoints, load_checkpoint
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import Trainer
from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.models.folder import load_model


def run(output, resume=None, **sections):
    cfg = parse_train_config(tiny_model.tiny_train_config(output, **sections))
    trainer = Trainer(cfg, resume=resume)
    trainer.train()
    return trainer


def losses(output: Path) -> list[float]:
    with open(output / "log.csv", encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_loss_falls_and_final_model_folder_loads(tmp_path):
    trainer = run(tmp_path, steps=24, optim={"lr": 0.1})
    values = losses(tmp_path)
    assert len(values) == 24
    assert sum(values[-6:]) / 6 < 0.6 * sum(values[:3]) / 3
    model = load_model(tmp_path / "final")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_resume_after_crash_is_bit_identical(tmp_path):
    # 8 images / batch 2 = 4 steps per epoch; checkpoints at 3 and 6, crash during step 5,
    # so the resumed run restarts mid-epoch and crosses an epoch boundary.
    sections = {"steps": 8, "checkpoint": {"every": 3, "keep_last": 5}}
    reference = run(tmp_path / "a", **sections)

    with crash_during_step(5):
        run(tmp_path / "b", **sections)
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == [
        "ckpt_00000003.pt"
    ]
    resumed = run(tmp_path / "b", resume="auto", **sections)

    assert resumed.resumed_from.name == "ckpt_00000003.pt"
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    state_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "ckpt_00000008.pt")
    state_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "ckpt_00000008.pt")
    for index, moments in state_a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(state_b["optimizer"]["state"][index][name], value)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # log rows after step 3 replaced


def test_accumulation_matches_the_large_batch(tmp_path):
    # Global batch 4 as 1 x 4 or 2 x 2: the label-count normaliser makes the gradients agree.
    common = {"steps": 3, "model": {"dropout": 0.0}}
    big = run(tmp_path / "big", data={"batch_size": 4}, **common)
    small = run(tmp_path / "acc", data={"batch_size": 2}, optim={"accumulate": 2}, **common)
    for key, value in big.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_inductive_labels_and_label_full_only_on_request(tmp_path):
    # Shapes classes: 0 background, 1-2 seen, 3 blue triangle and 4 yellow bar unseen.
    zero_shot = {"zero_shot": {"setting": "inductive", "unseen": ["blue triangle", 4]}}
    plain = run(tmp_path / "plain", steps=2, model={"num_classes": 3}, data=zero_shot)
    full = run(
        tmp_path / "full", steps=2, model={"num_classes": 3, "needs_full": True}, data=zero_shot
    )
    for seen in plain.model.received:
        assert "label_full" not in seen["keys"]
        assert set(seen["label"].unique().tolist()) <= {0, 1, 2, 255}
    for seen in full.model.received:
        assert "label_full" in seen["keys"]
    samples = [full.data.source.sample(i, np.random.default_rng(i)) for i in range(8)]
    batch = full.data.collate(samples)
    label, label_full = batch["label"], batch["label_full"]
    unseen = (label_full == 3) | (label_full == 4)
    assert unseen.any()
    assert (label[unseen] == 255).all()
    kept = label_full <= 2
    assert torch.equal(label[kept], label_full[kept])
    assert full.data.split == {
        "setting": "inductive",
        "seen": ["background", "red square", "green disc"],
        "unseen": ["blue triangle", "yellow bar"],
    }


def test_checkpoint_from_another_method_is_refused(tmp_path):
    run(tmp_path, steps=2)
    path = list_checkpoints(tmp_path / "checkpoints")[-1]
    state = torch.load(path, weights_only=True)
    state["method"] = "tagclip"
    torch.save(state, path)
    cfg = parse_train_config(tiny_model.tiny_train_config(tmp_path / "new"))
    with pytest.raises(CheckpointError, match="trained with method 'tagclip'"):
        Trainer(cfg, resume=str(path))


def test_existing_run_needs_resume(tmp_path):
    run(tmp_path, steps=2)
    with pytest.raises(ConfigError, match="--resume auto"):
        run(tmp_path, steps=2)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"optim": {"lrr": 1.0}}, "unknown key"),
        ({"optim": {"lr": "fast"}}, "expected a number"),
        ({"model": {"num_clases": 3}}, "unknown key"),
        ({"schedule": {"epochs": 2}}, "exactly one of"),
        ({"data": {"pipeline": "nope"}}, "unknown data.pipeline"),
        ({"data": {"zero_shot": {"setting": "inductive", "unseen": ["unicorn"]}}}, "unicorn"),
        ({"data": {"batch_size": 64}}, "fewer than one global batch"),
        ({"run": {"device": "cpu", "precision": "bf16"}}, "needs a GPU"),
    ],
)
def test_bad_configs_fail_before_training(tmp_path, monkeypatch, sections, message):
    started = []
    monkeypatch.setattr(trainer_module.Trainer, "train", lambda self: started.append(1))
    with pytest.raises(ConfigError, match=message):
        run(tmp_path, **sections)
    assert not started


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_gpu(tmp_path, precision):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    trainer = run(tmp_path, steps=4, run={"device": "cuda", "precision": precision})
    assert all(v == v for v in losses(tmp_path))  # finite, no NaN
    state = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert (state["scaler"] is not None) == (precision == "fp16")
    assert trainer.model.head.weight.dtype == torch.float32  # master weights stay fp32


@pytest.mark.slow  # starts worker processes (~10 s on a shared 2-core VM)
def test_worker_processes_do_not_change_the_data(tmp_path):
    # Augmentation RNG is keyed by (seed, epoch, index), not by worker state.
    inline = run(tmp_path / "inline", steps=2, data={"num_workers": 0})
    workers = run(tmp_path / "workers", steps=2, data={"num_workers": 2})
    for key, value in inline.model.state_dict().items():
        assert torch.equal(workers.model.state_dict()[key], value), key
