"""`vocaseg eval` end to end on synthetic folder and VSPW-layout datasets with the colour stub
(tests/eval_stub.py)."""

import csv
import json

import numpy as np
import pytest

from data.layouts import label, write_video
from eval_stub import ColourStub, StubConfig, nearest_colour_labels
from vocaseg import metrics
from vocaseg.cli.main import main
from vocaseg.data import load_dataset
from vocaseg.data.synthetic import ShapesDataset, make_shapes_dataset
from vocaseg.engine.evaluator import evaluate


@pytest.fixture
def root(tmp_path):
    return make_shapes_dataset(tmp_path / "shapes", 4, size=32, seed=4, split="val")


def run(capsys, *argv):
    code = main(["eval", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_writes_metrics_and_per_class(root, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys,
        "--model",
        "colour_stub",
        "--dataset",
        "folder",
        "--data-root",
        str(root),
        "--output",
        str(out_dir),
        "--protocol",
        "training-free",
    )
    assert code == 0, err
    assert "mIoU" in out and "evaluated 4 images" in out
    saved = json.loads((out_dir / "metrics.json").read_text())
    data = ShapesDataset(4, size=32, seed=4)
    cm = sum(
        metrics.confusion_matrix(nearest_colour_labels(data[i]["image"], 5), data[i]["label"], 5)
        for i in range(4)
    )
    expected = metrics.summarize(cm, semantics="mmseg")
    assert saved["headline"]["semantics"] == "mmseg"
    assert saved["headline"]["mIoU"] == pytest.approx(expected["mIoU"])
    assert set(saved["summaries"]) == {"mmseg", "detectron2"}
    record = saved["record"]
    assert record["model"] == "colour_stub" and record["protocol"] == "training-free"
    assert record["dataset"]["dataset"] == "folder" and record["dataset"]["count"] == 4
    assert record["class_list"]["sha256"] and record["vocaseg_version"]
    with open(out_dir / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["tp"]) for r in rows] == np.diag(cm).tolist()
    assert [r["name"] for r in rows] == (root / "classes.txt").read_text().splitlines()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_such_model", "--dataset", "folder"], "unknown model 'no_such_model'"),
        (["--model", "colour_stub", "--dataset", "no_such_set"], "unknown dataset 'no_such_set'"),
        (
            ["--model", "colour_stub", "--dataset", "folder", "--protocol", "zs-split"],
            "no seen/unseen",
        ),
        (["--model", "colour_stub", "--dataset", "folder", "--background", "bg:magic"], "bg:magic"),
    ],
)
def test_bad_names_exit_2_with_one_line(root, capsys, argv, message):
    code, _, err = run(capsys, *argv, "--data-root", str(root))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_corrupt_image_stop_and_skip(root, tmp_path, capsys):
    bad = sorted((root / "images" / "val").glob("*.png"))[1]
    bad.write_bytes(b"not a png")
    common = ["--model", "colour_stub", "--dataset", "folder", "--data-root", str(root)]
    code, _, err = run(capsys, *common, "--output", str(tmp_path / "a"))
    assert code == 2 and err.count("\n") == 1 and bad.name in err and "--on-error skip" in err
    assert not (tmp_path / "a").exists()

    code, out, err = run(capsys, *common, "--output", str(tmp_path / "b"), "--on-error", "skip")
    assert code == 0, err
    assert "skipped 1" in out and bad.name in out
    record = json.loads((tmp_path / "b" / "metrics.json").read_text())["record"]
    assert record["evaluated"] == 3 and len(record["skipped"]) == 1
    assert bad.name in record["skipped"][0]["file"]


def test_save_vis_and_limit(root, tmp_path, capsys):
    out_dir = tmp_path / "vis_run"
    code, _, err = run(
        capsys,
        "--model",
        "colour_stub",
        "--dataset",
        "folder",
        "--data-root",
        str(root),
        "--output",
        str(out_dir),
        "--limit",
        "2",
        "--save-vis",
        "1",
        "--semantics",
        "detectron2",
    )
    assert code == 0, err
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert saved["record"]["evaluated"] == 2 and list(saved["summaries"]) == ["detectron2"]
    assert len(list((out_dir / "vis").glob("*.png"))) == 1


@pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")
def test_video_dataset_reports_vc_and_limits_videos(tmp_path, capsys):
    frames = [label([0, 3 + t % 2, 124, 255]) for t in range(10)]  # 10 frames: VC8 has 2 windows
    videos = {"v1": frames, "v2": frames[:9], "v3": frames[:3]}
    write_video(tmp_path, "VSPW_480p/data/{video}/origin", "VSPW_480p/data/{video}/mask",
                "VSPW_480p/val.txt", videos)  # fmt: skip
    out_dir = tmp_path / "out"
    argv = ["--model", "colour_stub", "--dataset", "vspw", "--data-root", str(tmp_path)]
    code, out, err = run(capsys, *argv, "--output", str(out_dir), "--limit", "2")
    assert code == 0, err
    expected = evaluate(ColourStub(StubConfig()), load_dataset("vspw", root=tmp_path), limit=2)
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert saved["headline"]["semantics"] == "detectron2"
    for key in ("mIoU", "VC8", "VC16"):
        assert saved["headline"].get(key) == (
            None if np.isnan(expected.summary[key]) else pytest.approx(expected.summary[key])
        )
    assert saved["summaries"]["mmseg"]["VC8"] == pytest.approx(expected.summary["VC8"])
    record = saved["record"]
    assert record["protocol"] == "ov-video" and record["video"] is True
    assert (record["videos"], record["frames"], record["evaluated"]) == (2, 19, 19)
    assert record["vc_windows"] == {"VC8": 2 + 1, "VC16": 0}
    assert "VC8" in out and "evaluated 19 frames of 2 videos" in out

    code, _, err = run(capsys, "--model", "colour_stub", "--dataset", "vspw", "--protocol",
                       "zs-split", "--data-root", str(tmp_path), "--output", str(tmp_path / "z"))  # fmt: skip
    assert code == 2 and "no seen/unseen" in err


def test_ov_video_needs_a_video_dataset(root, capsys):
    argv = ["--model", "colour_stub", "--dataset", "folder", "--protocol", "ov-video"]
    code, _, err = run(capsys, *argv, "--data-root", str(root))
    assert code == 2 and err.count("\n") == 1 and "needs a video dataset" in err
