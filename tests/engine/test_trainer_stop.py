"""Stopping and resuming a training run without losing anything: SIGINT/SIGTERM save the step
just completed and ``--resume auto`` ends bit-identical to an uninterrupted run; a NaN loss is
skipped (``optim.skip_nonfinite``) or stops with the last good step saved; a full disk keeps the
previous checkpoint; a changed config is refused unless allowed, and recorded when allowed."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_model
from test_checkpoint import disk_fills_at_step

from vocaseg.data.synthetic import make_shapes_dataset
from vocaseg.engine import checkpoint as ckpt
from vocaseg.engine.interrupt import TrainingInterrupted
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import NonFiniteLoss, Trainer
from vocaseg.errors import CheckpointError, ConfigError, UserError

# 8 images / batch 2 = 4 steps per epoch; 8 steps cross an epoch boundary.
SECTIONS = {"steps": 8, "checkpoint": {"every": 3, "keep_last": 5}}


def trainer(output, resume=None, allow=False, **sections) -> Trainer:
    cfg = parse_train_config(tiny_model.tiny_train_config(output, **{**SECTIONS, **sections}))
    return Trainer(cfg, resume=resume, allow_config_change=allow)


def run(output, resume=None, allow=False, **sections) -> Trainer:
    result = trainer(output, resume, allow, **sections)
    result.train()
    return result


def rows(output: Path) -> list[dict[str, str]]:
    with open(output / "log.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def checkpoints(output: Path) -> list[str]:
    return [p.name for p in ckpt.list_checkpoints(output / "checkpoints")]


def assert_same_run(a: Trainer, b: Trainer) -> None:
    """Same weights, same optimiser moments, same log: bit for bit."""
    for key, value in a.model.state_dict().items():
        assert torch.equal(b.model.state_dict()[key], value), key
    moments_a, moments_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    for index, moments in moments_a["state"].items():
        for name, value in moments.items():
            assert torch.equal(moments_b["state"][index][name], value), (index, name)
    assert rows(a.output) == rows(b.output)


def signal_at_call(monkeypatch, call: int, signum=signal.SIGINT, times: int = 1) -> None:
    """Send ``signum`` to this process from another thread during optimiser step ``call``."""
    original, seen = Trainer._optimizer_step, {"n": 0}

    def stepping(self, micro):
        seen["n"] += 1
        for _ in range(times if seen["n"] == call else 0):
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signum))
            sender.start()
            sender.join()
        return original(self, micro)

    monkeypatch.setattr(Trainer, "_optimizer_step", stepping)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_the_step_and_resume_is_bit_identical(tmp_path, monkeypatch, signum, code):
    reference = run(tmp_path / "a")
    signal_at_call(monkeypatch, 5, signum)
    with pytest.raises(TrainingInterrupted) as stop:
        run(tmp_path / "b")
    monkeypatch.undo()
    # step 5 completes, then its checkpoint is written (periodic ones every 3)
    assert (stop.value.step, stop.value.exit_code) == (5, code)
    assert stop.value.signal_name == signal.Signals(signum).name
    assert "--resume auto" in str(stop.value) and "ckpt_00000005.pt" in str(stop.value)
    assert checkpoints(tmp_path / "b") == ["ckpt_00000003.pt", "ckpt_00000005.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    resumed = run(tmp_path / "b", resume="auto")
    assert resumed.resumed_from.name == "ckpt_00000005.pt"
    assert_same_run(reference, resumed)


def test_a_second_signal_stops_at_once(tmp_path, monkeypatch):
    signal_at_call(monkeypatch, 2, times=2)
    with pytest.raises(KeyboardInterrupt) as stop:
        run(tmp_path, checkpoint={"every": 1})
    assert not isinstance(stop.value, TrainingInterrupted)
    assert checkpoints(tmp_path) == ["ckpt_00000001.pt"]  # step 2 abandoned, nothing half-written
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_nan_stops_with_the_last_good_step_and_skipping_resumes_exactly(tmp_path):
    nan = {"model": {"nan_steps": [6]}}
    skipping = run(tmp_path / "a", optim={"skip_nonfinite": 1}, **nan)
    with pytest.raises(NonFiniteLoss) as stop:
        run(tmp_path / "b", **nan)
    message = str(stop.value)
    assert "loss is nan at step 6" in message and "optim.skip_nonfinite" in message
    assert "ckpt_00000005.pt" in message and "\n" not in message
    assert checkpoints(tmp_path / "b") == ["ckpt_00000003.pt", "ckpt_00000005.pt"]

    resumed = run(tmp_path / "b", resume="auto", optim={"skip_nonfinite": 1}, **nan)
    assert_same_run(skipping, resumed)
    skipped = [row for row in rows(tmp_path / "b") if row["skipped_nonfinite"]]
    assert [(row["step"], row["skipped_nonfinite"], row["loss"]) for row in skipped] == [
        ("6", "1", "")
    ]
    state = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "ckpt_00000008.pt")
    assert state["skipped_nonfinite"] == 1


def test_skipped_steps_do_not_update_and_the_budget_is_counted(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"at step 4 after 2 skipped \(optim.skip_nonfinite=2"):
        run(tmp_path, optim={"skip_nonfinite": 2}, model={"nan_steps": [2, 3, 4]})
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000003.pt")
    assert state["skipped_nonfinite"] == 2
    one_step = run(tmp_path / "ref", checkpoint={"every": 1, "keep_last": 9})
    first = ckpt.load_checkpoint(tmp_path / "ref" / "checkpoints" / "ckpt_00000001.pt")
    for key, value in first["model"].items():  # steps 2 and 3 changed no weight
        assert torch.equal(state["model"][key], value), key
    assert one_step.step == 8


def test_nan_at_the_first_step_writes_nothing(tmp_path):
    with pytest.raises(NonFiniteLoss, match="at step 1; nothing trained yet"):
        run(tmp_path, model={"nan_steps": [1]})
    assert checkpoints(tmp_path) == []


def test_full_disk_keeps_the_previous_checkpoint_and_resumes(tmp_path, monkeypatch):
    reference = run(tmp_path / "a")
    disk_fills_at_step(monkeypatch, 6)
    with pytest.raises(UserError, match=r"ckpt_00000006.pt: disk full .*ckpt_00000003.pt"):
        run(tmp_path / "b")
    monkeypatch.undo()
    assert checkpoints(tmp_path / "b") == ["ckpt_00000003.pt"]
    assert_same_run(reference, run(tmp_path / "b", resume="auto"))


def test_resume_auto_without_checkpoint_says_it_starts_from_scratch(tmp_path, capsys):
    run(tmp_path, resume="auto", steps=2)
    assert f"no checkpoint in {tmp_path / 'checkpoints'}; starting from scratch" in (
        capsys.readouterr().out
    )


def test_changed_config_is_refused_then_allowed_and_recorded(tmp_path):
    run(tmp_path, steps=4, checkpoint={"every": 2})
    recorded = (tmp_path / "train_config.json").read_bytes()
    with pytest.raises(ConfigError) as refused:
        trainer(tmp_path, resume="auto", steps=6, optim={"lr": 0.5}, model={"hidden": 4})
    message = str(refused.value)
    assert "ckpt_00000004.pt was written with another config" in message
    assert "model.hidden 8 -> 4" in message and "optim.lr 0.05 -> 0.5" in message
    assert "schedule.iterations 4 -> 6" in message and "--allow-config-change" in message

    run(tmp_path, resume="auto", allow=True, steps=6, optim={"lr": 0.5}, checkpoint={"every": 2})
    assert (tmp_path / "train_config.json").read_bytes() == recorded
    (entry,) = [json.loads(line) for line in (tmp_path / "config_changes.jsonl").open()]
    assert entry["step"] == 4 and entry["checkpoint"].endswith("ckpt_00000004.pt")
    assert entry["changes"] == {"optim.lr": [0.05, 0.5], "schedule.iterations": [4, 6]}
    newest = ckpt.load_checkpoint(tmp_path / "checkpoints" / "ckpt_00000006.pt")
    assert newest["config"]["optim"]["lr"] == 0.5  # the next resume compares with these


def test_settings_that_do_not_change_training_may_change(tmp_path):
    reference = run(tmp_path / "a")
    run(tmp_path / "b")
    free = {
        "data": {"num_workers": 0},
        "logging": {"every": 2, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 2, "keep_last": 9},
        "optim": {"skip_nonfinite": 3},
    }
    (tmp_path / "b" / "checkpoints" / "ckpt_00000008.pt").unlink()
    (tmp_path / "b" / "checkpoints" / "ckpt_00000006.pt").unlink()
    resumed = run(tmp_path / "b", resume="auto", **free)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_evaluation_leaves_the_training_rng_alone(tmp_path):
    root = tmp_path / "shapes"
    make_shapes_dataset(root, num_images=8, size=32, seed=0, split="train")
    make_shapes_dataset(root, num_images=2, size=32, seed=1, split="val")
    data = {"pipeline": "semantic", "dataset": "folder", "root": str(root)}
    plain = run(tmp_path / "plain", steps=4, data=data)
    evaluated = run(tmp_path / "eval", steps=4, data=data, eval={"every": 1})
    for key, value in plain.model.state_dict().items():
        assert torch.equal(evaluated.model.state_dict()[key], value), key


def test_moved_data_resumes_but_other_data_is_refused(tmp_path):
    first, moved, other = tmp_path / "one", tmp_path / "moved", tmp_path / "other"
    make_shapes_dataset(first, num_images=8, size=32, seed=0, split="train")
    make_shapes_dataset(other, num_images=8, size=32, seed=5, split="train")
    data = {"pipeline": "semantic", "dataset": "folder", "root": str(first)}
    run(tmp_path / "run", steps=4, checkpoint={"every": 2}, data=data)
    first.rename(moved)
    run(tmp_path / "run", resume="auto", steps=6, allow=True, data={**data, "root": str(moved)})
    with pytest.raises(ConfigError, match=r"training data differs .*samples_sha256"):
        trainer(tmp_path / "run", resume="auto", steps=6, data={**data, "root": str(other)})


def test_changed_optimiser_groups_are_one_line(tmp_path):
    run(tmp_path, steps=2)
    state = torch.load(tmp_path / "checkpoints" / "ckpt_00000002.pt", weights_only=True)
    moments = state["optimizer"]["state"]
    moments[0], moments[2] = moments[2], moments[0]  # stem.weight's moments on another tensor
    torch.save(state, tmp_path / "checkpoints" / "ckpt_00000002.pt")
    with pytest.raises(CheckpointError, match=r"optimiser state does not fit .* for a parameter"):
        trainer(tmp_path, resume="auto", steps=2)
