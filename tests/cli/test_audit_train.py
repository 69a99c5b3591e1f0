"""The newcomer audit's ``vocaseg train`` rows (config, train, checkpoints, devices, output
folders, interruption) as a matrix: each case asserts its exit code, one line on stderr, no
traceback, and that an earlier run in the same place (checkpoints, train_config.json, log.csv,
final model) is neither lost nor rewritten."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import tiny_model
from test_checkpoint import disk_fills_at_step

from cli_helpers import run_cli
from vocaseg.data.synthetic import make_shapes_dataset
from vocaseg.engine import checkpoint as ckpt
from vocaseg.engine.trainer import Trainer

TAGCLIP_TINY = Path(__file__).resolve().parents[1] / "models" / "tagclip_tiny.yaml"
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished 8-step tiny run: checkpoints 4 and 8, train_config.json, log.csv, final/."""
    root = tmp_path_factory.mktemp("earlier")
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_model.tiny_train_config(root / "run")), "utf-8")
    from vocaseg.cli.main import main

    assert main(["train", str(config)]) == 0
    return root / "run"


@dataclass
class Place:
    """The folder a case runs in: the earlier run (``run``), its config and scratch space."""

    tmp: Path
    run: Path
    config: Path

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def config_with(self, name: str = "changed.yaml", **sections) -> Path:
        data = tiny_model.tiny_train_config(self.run, **sections)
        return self.write(name, yaml.safe_dump(data))


@dataclass
class Case:
    """``argv(place)`` after ``prepare(place)``; exit ``code``, stderr ``fragments`` (absent:
    ``absent``), stdout ``out`` fragments; ``line`` None means no stderr line is expected."""

    argv: Callable[[Place], list]
    code: int = 2
    fragments: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    out: tuple[str, ...] = ()
    prepare: Callable[[Place, pytest.MonkeyPatch], None] | None = None
    prefix: str | None = "error: "
    skip: bool = False
    check: Callable[[Place], None] | None = None
    marks: list = field(default_factory=list)


def train(place: Place, *extra) -> list:
    return ["train", place.config, *extra]


def on_run(place: Place, *extra) -> list:
    return train(place, "--output", place.run, *extra)


def fresh(place: Place, *extra) -> list:
    return train(place, "--output", place.tmp / "new", *extra)


def truncate(path: Path, size: int = 1000) -> None:
    path.write_bytes(path.read_bytes()[:size])


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def write_evil(place: Place, monkeypatch) -> None:
    with open(place.tmp / "evil.pt", "wb") as handle:
        pickle.dump({"format": "vocaseg-train-checkpoint/1", "x": _Payload()}, handle)
    monkeypatch.chdir(place.tmp)


def bad_labels(place: Place, monkeypatch) -> None:
    make_shapes_dataset(place.tmp / "data", num_images=8, size=32, seed=0, split="train")
    for path in sorted((place.tmp / "data" / "masks" / "train").glob("*.png")):
        label = np.array(Image.open(path))
        label[0, 0] = 77
        Image.fromarray(label).save(path)


def disk_fills_at_step_4(place: Place, monkeypatch) -> None:
    disk_fills_at_step(monkeypatch, 4)


def ctrl_c_at_step_3(place: Place, monkeypatch) -> None:
    original, calls = Trainer._optimizer_step, {"n": 0}

    def stepping(self, micro):
        calls["n"] += 1
        if calls["n"] == 3:
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            sender.start()
            sender.join()
        return original(self, micro)

    monkeypatch.setattr(Trainer, "_optimizer_step", stepping)


def new_checkpoints(*names: str) -> Callable[[Place], None]:
    def check(place: Place) -> None:
        found = [p.name for p in ckpt.list_checkpoints(place.tmp / "new" / "checkpoints")]
        assert found == list(names)

    return check


def shapes_folder(place: Place) -> list:
    data = ["data.pipeline=semantic", "data.dataset=folder", f"data.root={place.tmp / 'data'}"]
    return [arg for value in data for arg in ("--set", value)]


CASES = {
    # 3.6 config
    "C01-typo-key": Case(
        lambda p: ["train", p.config_with(optim={"lrr": 1.0}), "--output", p.run],
        fragments=("unknown key(s) lrr", "valid keys"),
    ),
    "C02-typo-model-key": Case(
        lambda p: ["train", p.config_with(model={"num_promts": 3}), "--output", p.run],
        fragments=("unknown key(s) num_promts",),
    ),
    "C03-typo-section": Case(
        lambda p: ["train", p.config_with(evall={"every": 1}), "--output", p.run],
        fragments=("unknown key(s) evall",),
    ),
    "C04-wrong-type": Case(
        lambda p: ["train", p.config_with(data={"batch_size": "two"}), "--output", p.run],
        fragments=("expected an integer, got 'two'",),
    ),
    "C05-yaml-syntax": Case(
        lambda p: ["train", p.write("bad.yaml", "model: {name: tiny_pixel\nrun: [1, 2\n")],
        fragments=("bad.yaml is not valid YAML: line 2, column 4", "flow mapping from line 1"),
    ),
    "C06-empty-config": Case(
        lambda p: ["train", p.write("empty.yaml", "")], fragments=("model.name is required",)
    ),
    "C07-negative-batch": Case(
        lambda p: ["train", p.config_with(data={"batch_size": -4}), "--output", p.run],
        fragments=("data.batch_size must be >= 1, got -4",),
    ),
    "C08-unknown-model": Case(
        lambda p: on_run(p, "--set", "model.name=tagclp"), fragments=("tagclp", "tagclip")
    ),
    "C09-unknown-dataset": Case(
        lambda p: fresh(p, "--set", "data.pipeline=semantic", "--set", "data.dataset=voc19"),
        fragments=("unknown dataset 'voc19'", "voc20"),
    ),
    "C10-config-is-a-folder": Case(
        lambda p: ["train", p.tmp],
        fragments=("is a folder", "pass a YAML file"),
        absent=("not found",),
    ),
    "C11-typo-override": Case(
        lambda p: on_run(p, "--set", "optim.lrr=1"), fragments=("unknown key(s) lrr",)
    ),
    "C12-override-type": Case(
        lambda p: on_run(p, "--set", "schedule.iterations=ten"), fragments=("expected an integer",)
    ),
    "C13-resume-auto-nothing-there": Case(
        lambda p: fresh(p, "--resume", "auto", "--set", "schedule.iterations=2"),
        code=0,
        prefix=None,
        out=("--resume auto: no checkpoint in", "new/checkpoints; starting from scratch"),
    ),
    # 3.5 checkpoints
    "C14-resume-missing": Case(
        lambda p: on_run(p, "--resume", "/nope.pt"), fragments=("checkpoint not found: /nope.pt",)
    ),
    "C15-resume-pickle-payload": Case(
        lambda p: on_run(p, "--resume", p.tmp / "evil.pt"),
        prepare=write_evil,
        fragments=("evil.pt is not a readable vocaseg training checkpoint",),
        check=lambda p: not (p.tmp / "PWNED").exists() or pytest.fail("payload ran"),
    ),
    "C16-resume-truncated": Case(
        lambda p: on_run(p, "--resume", p.tmp / "cut.pt"),
        prepare=lambda p, m: (p.tmp / "cut.pt").write_bytes(
            (p.run / "checkpoints" / "ckpt_00000008.pt").read_bytes()[:1000]
        ),
        fragments=("cut.pt is not a readable vocaseg training checkpoint",),
    ),
    "C17-resume-model-shape": Case(
        lambda p: on_run(p, "--resume", "auto", "--set", "model.hidden=4"),
        fragments=("ckpt_00000008.pt was written with another config", "model.hidden 8 -> 4"),
    ),
    "C17b-resume-model-shape-allowed": Case(
        lambda p: on_run(p, "--resume", "auto", "--set", "model.hidden=4", "--allow-config-change"),
        fragments=("does not fit this model: wrong shape", "(the config changed: model.hidden"),
    ),
    "C18-resume-changed-lr": Case(
        lambda p: on_run(p, "--resume", "auto", "--set", "optim.lr=0.5"),
        fragments=("optim.lr 0.05 -> 0.5", "--allow-config-change"),
        check=lambda p: not (p.run / "config_changes.jsonl").exists() or pytest.fail("recorded"),
    ),
    "C19-label-out-of-range": Case(
        lambda p: fresh(p, *shapes_folder(p)),
        prepare=bad_labels,
        fragments=("holds value(s) [77] with no class",),
        absent=("Traceback", "DataLoader worker"),
    ),
    "C19b-label-out-of-range-in-a-worker": Case(
        lambda p: fresh(p, *shapes_folder(p), "--set", "data.num_workers=1"),
        prepare=bad_labels,
        fragments=("holds value(s) [77] with no class",),
        absent=("Traceback", "DataLoader worker"),
        marks=[pytest.mark.slow],
    ),
    # 3.6 train
    "T01-existing-run-without-resume": Case(
        lambda p: on_run(p), fragments=("already holds checkpoints", "--resume auto")
    ),
    "T02-nan-loss": Case(
        lambda p: fresh(p, "--set", "model.nan_steps=[3]", "--set", "checkpoint.every=100"),
        fragments=("loss is nan at step 3", "ckpt_00000002.pt", "optim.skip_nonfinite=N"),
        check=new_checkpoints("ckpt_00000002.pt"),
    ),
    "T03-eval-dataset-missing": Case(
        lambda p: fresh(
            p,
            "--set",
            "eval.every=2",
            "--set",
            "eval.dataset=voc20",
            "--set",
            f"eval.root={p.tmp / 'nowhere'}",
        ),
        fragments=("voc20", "eval.root"),
        absent=("--data-root",),
        check=lambda p: not (p.tmp / "new" / "checkpoints").exists() or pytest.fail("trained"),
    ),
    "T04-cuda-without-cuda": Case(
        lambda p: fresh(p, "--set", "run.device=cuda"),
        fragments=("run.device=cuda", "CUDA is not available", "run.device=cpu"),
        absent=("--device",),
        skip=CUDA,
    ),
    "M12-device-gpu0": Case(
        lambda p: fresh(p, "--set", "run.device=gpu0"),
        fragments=("run.device must be auto, cpu, cuda or cuda:N, got 'gpu0'",),
    ),
    "T05-fp16-on-cpu": Case(
        lambda p: fresh(p, "--set", "run.device=cpu", "--set", "run.precision=fp16"),
        fragments=("needs a GPU",),
    ),
    "T06-output-not-writable": Case(
        lambda p: train(p, "--output", p.run / "train_config.json" / "sub"),
        fragments=("cannot write to the run folder", "--output"),
    ),
    "T06b-output-is-a-file": Case(
        lambda p: train(p, "--output", p.run / "log.csv"), fragments=("is a file, not a folder",)
    ),
    "T07-disk-full-at-a-checkpoint": Case(
        lambda p: fresh(p, "--set", "checkpoint.every=2", "--set", "checkpoint.keep_last=5"),
        prepare=disk_fills_at_step_4,
        fragments=("ckpt_00000004.pt: disk full", "newest intact checkpoint is", "ckpt_00000002"),
        check=new_checkpoints("ckpt_00000002.pt"),
    ),
    "T08-newest-checkpoint-damaged": Case(
        lambda p: on_run(p, "--resume", "auto"),
        prepare=lambda p, m: truncate(p.run / "checkpoints" / "ckpt_00000008.pt"),
        fragments=("ckpt_00000008.pt is not a readable", "--resume", "ckpt_00000004.pt"),
    ),
    "SIGINT-saves-and-says-how-to-continue": Case(
        lambda p: fresh(p, "--set", "checkpoint.every=100"),
        prepare=ctrl_c_at_step_3,
        code=130,
        prefix="interrupted (SIGINT) at step 3",
        fragments=("ckpt_00000003.pt", "--resume auto"),
        check=new_checkpoints("ckpt_00000003.pt"),
    ),
    "weights-hint-names-a-train-option": Case(
        lambda p: [
            "train",
            TAGCLIP_TINY,
            "--output",
            p.tmp / "new",
            "--set",
            "run.clip_weights=ViT-B/16",
            "--set",
            "data.pipeline=semantic",  # tagclip_tiny's own pipeline is registered by its tests
        ],
        fragments=("ViT-B/16", "run.clip_weights"),
        absent=("--weights",),
    ),
    "print-model-needs-no-weights": Case(
        lambda p: ["train", TAGCLIP_TINY, "--print-model", "--set", "run.clip_weights=ViT-B/16"],
        code=0,
        prefix=None,
        out=("TagCLIP(", "total"),
    ),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.usefixtures("offline_cache")
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=case.marks) for name, case in CASES.items()]
)
def test_audit_row(name, earlier_run, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    if case.skip:
        pytest.skip("needs a machine without CUDA")
    place = Place(tmp_path, tmp_path / "run", tmp_path / "train.yaml")
    shutil.copytree(earlier_run, place.run)
    place.config.write_text(
        yaml.safe_dump(tiny_model.tiny_train_config(place.run)), encoding="utf-8"
    )
    if case.prepare is not None:
        case.prepare(place, monkeypatch)
    before = snapshot(place.run)

    code, out, err = run_cli(capsys, *case.argv(place))
    monkeypatch.undo()

    assert code == case.code, err
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    if case.prefix is None:
        assert not lines, err
    else:
        assert len(lines) == 1, err
        assert lines[0].startswith(case.prefix), lines[0]
        for fragment in case.fragments:
            assert fragment in lines[0], (fragment, lines[0])
        for fragment in case.absent:
            assert fragment not in lines[0], (fragment, lines[0])
    for fragment in case.out:
        assert fragment in out, (fragment, out)
    after = snapshot(place.run)
    assert {k: after.get(k) for k in before} == before  # nothing earlier lost or rewritten
    if case.check is not None:
        case.check(place)
