"""``vocaseg train``: a run on a synthetic folder dataset with periodic evaluation, --set overrides,
--print-model, and one-line errors (exit 2) for bad configs, datasets and checkpoints."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import tiny_model

from vocaseg.cli.main import main
from vocaseg.data.synthetic import make_shapes_dataset


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, num_images=8, size=32, seed=0, split="train")
    make_shapes_dataset(root, num_images=3, size=32, seed=1, split="val")
    return root


def write_config(path: Path, output: Path, **sections) -> Path:
    config = tiny_model.tiny_train_config(output, **sections)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_train_on_folder_dataset_with_eval_and_overrides(tmp_path, shapes_root, capsys):
    config = write_config(
        tmp_path / "train.yaml",
        tmp_path / "ignored",
        steps=4,
        data={"pipeline": "semantic", "dataset": "folder", "root": str(shapes_root)},
        eval={"every": 2, "options": {"semantics": ["mmseg"]}},
    )
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            str(config),
            "--output",
            str(run_dir),
            "--set",
            "optim.lr=0.02",
            "--set",
            "schedule.name=cosine",
        ]
    )
    assert code == 0, capsys.readouterr().err
    recorded = json.loads((run_dir / "train_config.json").read_text())
    assert recorded["optim"]["lr"] == 0.02 and recorded["schedule"]["name"] == "cosine"
    with open(run_dir / "log.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    eval_rows = [row for row in rows if row.get("eval/mIoU")]
    assert [int(row["step"]) for row in eval_rows] == [2, 4]
    assert (run_dir / "final" / "model.json").is_file()
    assert "final model:" in capsys.readouterr().out


def test_print_model_shows_tree_and_counts(tmp_path, capsys):
    config = write_config(tmp_path / "train.yaml", tmp_path / "run")
    assert main(["train", str(config), "--print-model", "--set", "model.hidden=4"]) == 0
    out = capsys.readouterr().out
    assert "TinyPixelModel(" in out and "Conv2d(3, 4" in out
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    # stem 3*4+4, norm 4+4, head 4*5+5, frozen linear 2*2+2 (not trainable)
    assert total_line.split()[1:] == ["55", "49"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr_typo=1"], "unknown key(s) lr_typo"),
        (["data.batch_size=two"], "expected an integer"),
        (
            ["data.pipeline=semantic", "data.dataset=folder", "data.root=/nonexistent"],
            "/nonexistent",
        ),
        (["run.init=/nonexistent/ckpt.pt"], "weights not found"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys, overrides, message):
    config = write_config(tmp_path / "train.yaml", tmp_path / "run")
    args = ["train", str(config)]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
