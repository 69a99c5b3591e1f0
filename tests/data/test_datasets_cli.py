"""``vocaseg datasets list | check | prepare`` end to end on tiny fake data."""

from __future__ import annotations

import pytest
from layouts import label, png_header, rgb, save_image, save_label, write_voc_mmseg

from vocaseg.cli.main import main


def test_list_shows_found_datasets(tmp_path, capsys):
    write_voc_mmseg(tmp_path, {"a": label([0, 1])})
    assert main(["datasets", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"voc21            21 classes  found: {tmp_path} (mmseg)" in out
    assert "ade847          847 classes  not found" in out and "folder" in out


def test_check_reports_ok_then_problems(tmp_path, capsys):
    write_voc_mmseg(tmp_path, {"a": label([0, 1]), "b": label([2])})
    assert main(["datasets", "check", "voc21", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "2 samples" in out and "warning: voc21 val: found 2 samples, the benchmark has 1449" in out
    )
    assert out.endswith("ok\n")  # a count unlike the benchmark's is a warning, not a problem
    save_label(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/b.png", label([2, 99]), palette=True)
    assert main(["datasets", "check", "voc21", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "b.png holds value(s) [99]" in out and "1 problem(s)" in out


def test_check_strict_and_missing_data_are_one_line_errors(tmp_path, capsys):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    assert main(["datasets", "check", "voc21", "--data-root", str(tmp_path), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: voc21 val: found 1 samples") and err.count("\n") == 1
    assert main(["datasets", "check", "pc59", "--data-root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no images and no labels" in err and "vocaseg datasets prepare pc59" in err


def test_check_names_the_missing_images_or_labels(tmp_path, capsys):
    # right after 'prepare coco_stuff': labels written, images not yet copied
    save_label(tmp_path / "coco_stuff164k/annotations/val2017/x_labelTrainIds.png", label([0]))
    assert main(["datasets", "check", "coco_stuff", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    labels, images = (tmp_path / f"coco_stuff164k/{d}/val2017" for d in ("annotations", "images"))
    assert f"labels found in {labels} but no images in {images}" in err
    save_image(tmp_path / "ADEChallengeData2016/images/validation/a.jpg", rgb())
    assert main(["datasets", "check", "ade150", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "images found in" in err and "but no label files (*.png) in" in err
    assert "annotations_detectron2/validation" in err and err.count("\n") == 1


def test_check_reads_a_bomb_as_a_problem_and_max_pixels_allows_it(tmp_path, capsys, pixel_limit):
    write_voc_mmseg(tmp_path, {"a": label([0]), "b": label([1])})
    bomb = tmp_path / "VOCdevkit/VOC2012/JPEGImages/b.png"
    bomb.write_bytes(png_header(20000, 20000))
    args = ["datasets", "check", "voc21", "--data-root", str(tmp_path)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"problem: {bomb} has 400,000,000 pixels, more than the limit of" in out
    assert "--max-pixels 400000000" in out and "1 problem(s)" in out
    assert main([*args, "--max-pixels", "400000000"]) == 1
    out = capsys.readouterr().out
    assert "cannot read image" in out and "more than the limit" not in out  # no pixel data
    assert main([*args, "--max-pixels", "0"]) == 2
    assert "--max-pixels" in capsys.readouterr().err


def test_help_lists_the_valid_names(capsys):
    for action in ("check", "prepare"):
        with pytest.raises(SystemExit):
            main(["datasets", action, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "cityscapes" in out and "pc59" in out
    with pytest.raises(SystemExit):
        main(["datasets", "check", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "voc21" in out and "folder" in out and "one of val, train, aug, test" in out


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
