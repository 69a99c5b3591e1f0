"""``vocaseg datasets list | check | prepare`` end to end on tiny fake data."""

from __future__ import annotations

import pytest
from layouts import label, save_label, write_voc_mmseg

from vocaseg.cli.main import main


def test_list_shows_found_datasets(tmp_path, capsys):
    write_voc_mmseg(tmp_path, {"a": label([0, 1])})
    assert main(["datasets", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"voc21            21 classes  found: {tmp_path} (mmseg)" in out
    assert "ade847          847 classes  not found" in out and "folder" in out


def test_check_reports_ok_then_problems(tmp_path, capsys):
    write_voc_mmseg(tmp_path, {"a": label([0, 1]), "b": label([2])})
    assert main(["datasets", "check", "voc21", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 samples" in out and "found 2 samples, the benchmark has 1449" in out
    save_label(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/b.png", label([2, 99]), palette=True)
    assert main(["datasets", "check", "voc21", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "b.png holds value(s) [99]" in out and "2 problem(s)" in out


def test_check_strict_and_missing_data_are_one_line_errors(tmp_path, capsys):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    assert main(["datasets", "check", "voc21", "--data-root", str(tmp_path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: voc21 val: found 1 samples") and err.count("\n") == 1
    assert main(["datasets", "check", "pc59", "--data-root", str(tmp_path / "none")]) == 2
    assert "vocaseg datasets prepare pc59" in capsys.readouterr().err


def test_prepare_prints_the_report(tmp_path, capsys):
    save_label(tmp_path / "src/val2017/x.png", label([0, 255]))
    args = ["datasets", "prepare", "coco_stuff", "--src", str(tmp_path / "src")]
    assert main([*args, "--dst", str(tmp_path / "dst")]) == 1  # counts differ from 5,000
    out = capsys.readouterr().out
    assert "val2017: 1 (expected 5000)" in out and "missing: 1" in out
    assert main(["datasets", "prepare", "nope", "--src", "a", "--dst", "b"]) == 2
    assert capsys.readouterr().err.startswith("error: no converter for 'nope'")


def test_datasets_without_action_prints_help(capsys):
    assert main(["datasets"]) == 0
    assert "prepare" in capsys.readouterr().out


@pytest.mark.parametrize("action", ["check", "prepare"])
def test_usage_errors_exit_2(action, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["datasets", action])
    assert exit_info.value.code == 2
