"""``vocaseg bench`` end to end on a tiny random CLIP saved to a file: the printed table, the JSON
record's structure and positive numbers (never their size), and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from vocaseg.bench import numbered_vocabulary

FAST = ["--set", "short_side=48", "--set", "window=0", "--set", "templates=single"]


pytestmark = pytest.mark.usefixtures("offline_cache")


def test_bench_prints_a_table_and_writes_json(capsys, tiny_clip_file, tmp_path):
    out = tmp_path / "runs" / "bench.json"
    argv = ["bench", "--weights", tiny_clip_file, "--size", 40, "--batch-size", 2, "--repeats", 1]
    code, stdout, _ = run_cli(capsys, *argv, "--classes", "cat, sofa; couch", "--json", out, *FAST)
    assert code == 0, stdout
    assert "images/s" in stdout and "vocabulary cold" in stdout
    record = json.loads(out.read_text())
    assert record["method"] == "maskclip" and record["weights"] == str(tiny_clip_file)
    assert record["config"]["short_side"] == 48 and record["preprocess"]["window"] is None
    assert (record["size"], record["batch_size"], record["repeats"]) == (40, 2, 1)
    assert (record["num_classes"], record["num_queries"]) == (2, 3)
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    vocab, images = record["vocabulary"], record["images"]
    assert vocab["cold_s"] > 0 and vocab["cached_s"] > 0
    assert len(images["batch_s"]) == 1 and images["median_s"] == images["min_s"] > 0
    assert images["images_per_s"] == pytest.approx(2 / images["median_s"])
    assert images["per_image_s"] == pytest.approx(images["median_s"] / 2)
    assert images["peak_memory"]["kind"] == "process_peak_rss"
    assert images["peak_memory"]["bytes"] > 2**20
    assert not list(out.parent.glob(".*.tmp*"))


def test_classes_as_a_number_takes_the_first_ade_names(capsys, tiny_clip_file, tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", "--weights", tiny_clip_file, "--size", 32, "--batch-size", 1, "--warmup", 0]
    code, _, _ = run_cli(capsys, *argv, "--repeats", 1, "--classes", 5, "--json", out, *FAST)
    assert code == 0
    assert json.loads(out.read_text())["num_classes"] == 5
    assert numbered_vocabulary(3).class_names == ["wall", "building, edifice", "sky"]


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--classes", "0"], ["--classes 0", "847"]),
        (["--classes", "2000"], ["--classes 2000"]),
        (["--classes", " , "], ["empty"]),
        (["--size", "0"], ["--size", "at least 1"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--repeats", "0"], ["--repeats"]),
        (["--model", "nope"], ["unknown model"]),
        (["--dtype", "int8"], ["int8"]),
        (["--set", "no_such_key=1"], ["no_such_key"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_clip_file, tmp_path, extra, fragments):
    code, _, err = run_cli(
        capsys, "bench", "--weights", tiny_clip_file, "--repeats", "1", *FAST, *extra
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unwritable_json_fails_before_measuring(capsys, tiny_clip_file, tmp_path):
    (tmp_path / "a_file").write_text("x")
    code, stdout, err = run_cli(
        capsys,
        "bench",
        "--weights",
        tiny_clip_file,
        *FAST,
        "--json",
        tmp_path / "a_file" / "b.json",
    )
    assert code == 2 and "--json" in err and "images/s" not in stdout
