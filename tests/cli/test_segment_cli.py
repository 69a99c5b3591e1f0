"""``vocaseg segment``, ``models`` and ``download`` end to end with a tiny CLIP saved in OpenAI
state-dict layout: outputs, exit codes and one-line errors for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_helpers import run_cli
from vocaseg.inference.segmenter import Segmenter

FAST = ["--set", "short_side=48", "--set", "window=0", "--set", "templates=single"]


pytestmark = pytest.mark.usefixtures("offline_cache")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 64)), ("b.jpg", (50, 30)), ("c.png", (40, 64))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_segment_writes_label_overlay_and_json(capsys, images, tiny_clip_file, tmp_path):
    out = tmp_path / "out"
    classes = "cat, sofa; couch, floor"
    code, stdout, _ = run_cli(
        capsys,
        "segment",
        images,
        "--classes",
        classes,
        "--weights",
        tiny_clip_file,
        "-o",
        out,
        *FAST,
    )
    assert code == 0 and "3 images" in stdout
    seg = Segmenter.from_pretrained(
        "maskclip", weights=tiny_clip_file, short_side=48, window=0, templates="single"
    )
    seg.set_vocabulary(classes)
    for stem in ("a", "b", "c"):
        source = next(images.glob(f"{stem}.*"))
        width, height = Image.open(source).size
        label = np.array(Image.open(out / f"{stem}_label.png"))
        assert label.shape == (height, width) and label.max() < 3
        assert np.array_equal(label, seg(source).label)
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.height >= height and overlay.width > width  # legend panel
        record = json.loads((out / f"{stem}.json").read_text())
        assert [c["name"] for c in record["classes"]] == ["cat", "sofa", "floor"]
        assert record["classes"][1]["names"] == ["sofa", "couch"]
        assert sum(c["area"] for c in record["classes"]) == pytest.approx(1.0)
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporaries


def test_one_bad_image_in_a_folder_exits_1_and_writes_the_rest(
    capsys, images, tiny_clip_file, tmp_path
):
    (images / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "segment",
        images,
        "--classes",
        "a, b",
        "--weights",
        tiny_clip_file,
        "-o",
        out,
        *FAST,
    )
    assert code == 1
    summary = err.strip().splitlines()[-1].split("\r")[-1]  # after the progress bar
    assert summary.startswith("error: 1 of 4 images failed") and "broken.png" in summary
    assert {p.name for p in out.glob("*_label.png")} == {
        "a_label.png",
        "b_label.png",
        "c_label.png",
    }


def test_bad_inputs_end_with_one_line_and_exit_2(capsys, images, tiny_clip_file, tmp_path):
    good = images / "a.png"
    (tmp_path / "not_image.png").write_text("plain text")
    full = tmp_path / "full.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(full)
    (tmp_path / "cut.jpg").write_bytes(full.read_bytes()[:300])
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "a_file").write_text("x")
    base = ["--weights", tiny_clip_file, "-o", tmp_path / "out", *FAST]
    cases = [
        ([tmp_path / "missing.png", "--classes", "a, b", *base], ["missing.png", "not found"]),
        ([tmp_path / "not_image.png", "--classes", "a, b", *base], ["not_image.png"]),
        ([tmp_path / "cut.jpg", "--classes", "a, b", *base], ["cut.jpg", "truncated"]),
        ([good, "--classes", " , ", *base], ["empty"]),
        ([good, "--classes", "cat, dog; Cat", *base], ["twice"]),
        ([good, "--classes", "cat, " + "very " * 80, *base], ["too long"]),
        (
            [good, "--classes", "a, b", "--model", "nope", *base],
            ["unknown model", "vocaseg models"],
        ),
        ([good, "--classes", "a, b", "--weights", tmp_path / "garbage.pt"], ["garbage.pt"]),
        ([good, "--classes", "a, b", *base, "-o", tmp_path / "a_file" / "out"], ["output folder"]),
        ([good, "--classes-file", tmp_path / "none.txt", *base], ["none.txt"]),
        ([good, "--classes", "a, b", *base, "--set", "bogus=1"], ["bogus"]),
    ]
    for argv, fragments in cases:
        code, _, err = run_cli(capsys, "segment", *argv)
        _assert_one_line_error(code, err, *fragments)


def test_missing_weights_offline_names_them_and_the_fix(capsys, images, tmp_path):
    code, _, err = run_cli(capsys, "segment", images / "a.png", "--classes", "a, b", "-o", tmp_path)
    _assert_one_line_error(code, err, "ViT-B/16", "vocaseg download", "--weights")
    assert str(tmp_path / "cache") in err  # where it looked


def test_models_lists_methods_and_weights(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "maskclip" in out and "clearclip" in out and "ViT-B/16" in out and "not cached" in out


def test_real_entry_point_reports_errors_in_one_line(tmp_path):
    env = {**os.environ, "VOCASEG_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "vocaseg", "segment", str(tmp_path / "nope.jpg"), "--classes", "a"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: image not found")
    assert len(result.stderr.strip().splitlines()) == 1
