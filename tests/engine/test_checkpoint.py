"""Training checkpoints: weights-only loadable, self-describing, atomic under a crash mid-write,
pruned to the newest N, and RNG states that round-trip."""

from __future__ import annotations

import errno
import io
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_model

from vocaseg.engine import checkpoint as ckpt
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import Trainer
from vocaseg.errors import CheckpointError, UserError
from vocaseg.models.weights import CHECKPOINT_FORMAT


def test_checkpoint_is_self_describing_and_weights_only(tmp_path):
    cfg = parse_train_config(tiny_model.tiny_train_config(tmp_path, steps=4))
    Trainer(cfg).train()
    paths = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in paths] == ["ckpt_00000004.pt"]
    state = torch.load(paths[0], weights_only=True)  # no pickled code
    assert state["format"] == CHECKPOINT_FORMAT and state["method"] == "tiny_pixel"
    assert state["config"]["optim"]["lr"] == 0.05
    assert state["vocabulary"]["classes"][1] == ["red square"]
    assert state["split"]["setting"] == "supervised"
    assert state["vocaseg_version"]
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 0, 4)
    assert set(state["model"]) == {
        "stem.weight",
        "stem.bias",
        "norm.weight",
        "norm.bias",
        "head.weight",
        "head.bias",
        "frozen.weight",
        "frozen.bias",
    }


class _DiskFull(io.FileIO):
    """A file on a disk with room for ``ROOM`` bytes: later writes fail as a full disk does."""

    ROOM = 2000

    def write(self, data):
        if self.tell() + len(data) > self.ROOM:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def full_disk_open(path, mode="r", *args, **kwargs):
    return io.BufferedWriter(_DiskFull(path, mode.replace("b", "")))


def disk_fills_at_step(monkeypatch, step: int) -> None:
    """The disk is full while the checkpoint of ``step`` is saved, and only then."""
    original = ckpt.save_checkpoint

    def save(path, state):
        if state["step"] == step:
            monkeypatch.setattr(ckpt, "open", full_disk_open, raising=False)
        try:
            return original(path, state)
        finally:
            monkeypatch.delattr(ckpt, "open", raising=False)

    monkeypatch.setattr(ckpt, "save_checkpoint", save)


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch):
    path = ckpt.checkpoint_path(tmp_path, 1)
    ckpt.save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(3)}})
    monkeypatch.setattr(ckpt, "open", full_disk_open, raising=False)  # torch writes through it
    with pytest.raises(UserError) as error:
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 2), {"model": {"w": torch.zeros(999)}})
    monkeypatch.undo()
    message = str(error.value)
    assert "disk full" in message and "ckpt_00000002.pt" in message and "\n" not in message
    assert f"the newest intact checkpoint is {path}" in message
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_other_write_errors_name_their_reason(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        UserError, match=r"cannot save checkpoint .*: File exists; check the folder"
    ):
        ckpt.save_checkpoint(tmp_path / "file" / "ckpt_00000001.pt", {"step": 1})


def test_checkpoint_is_on_disk_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), {"step": 1})
    assert synced and all(Path(p).parent == path.parent and p != str(path) for p in synced)


def test_keep_last_prunes_oldest(tmp_path):
    for step in (5, 10, 15, 20):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), {"step": step})
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "ckpt_00000015.pt",
        "ckpt_00000020.pt",
    ]


def test_pruning_spares_the_steps_to_keep(tmp_path):
    for step in (5, 10, 15, 20):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), {"step": step})
    ckpt.prune_checkpoints(tmp_path, keep_last=1, keep=[10])
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "ckpt_00000010.pt",
        "ckpt_00000020.pt",
    ]


def test_damaged_or_foreign_files_are_clear_errors(tmp_path):
    damaged = tmp_path / "ckpt_00000001.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        ckpt.load_checkpoint(damaged)
    foreign = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="format tag missing"):
        ckpt.load_checkpoint(foreign)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in the legacy state
    path = ckpt.save_checkpoint(tmp_path / "ckpt_00000001.pt", {"rng": [ckpt.rng_state()]})
    expected = (random.random(), np.random.normal(), np.random.rand(), torch.rand(2))
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"][0])
    got = (random.random(), np.random.normal(), np.random.rand(), torch.rand(2))
    assert expected[:3] == got[:3] and torch.equal(expected[3], got[3])
