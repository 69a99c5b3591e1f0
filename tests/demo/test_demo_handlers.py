"""The demo's request handlers without a browser or Gradio: parity with ``Segmenter`` and with
``vocaseg segment`` (label PNG and JSON), the settings, and the messages for bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from vocaseg.demo.handlers import (
    BACKGROUND,
    MAX_CLASSES,
    WHOLE,
    WINDOW,
    DemoSettings,
    apply_settings,
    check_memory,
    guarded,
    parse_classes,
    segment_image,
)
from vocaseg.errors import ImageError, VocabularyError
from vocaseg.inference.segmenter import Segmenter
from vocaseg.text.vocab import Vocabulary

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "chelsea.png"
# Tiny model settings that keep sliding windows (64 px short side, 32 px windows every 16 px).
MODEL = {"short_side": 64, "window": 32, "stride": 16, "templates": "single"}
CLASSES = "cat, sofa; couch, floor"


@pytest.fixture
def segmenter(tiny_clip_file) -> Segmenter:
    return Segmenter.from_pretrained("maskclip", weights=tiny_clip_file, **MODEL)


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "street scene.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def _answer(segmenter, payload, tmp_path, classes=CLASSES, settings=None, **kw):
    out = tmp_path / "demo_out"
    out.mkdir(exist_ok=True)
    return segment_image(segmenter, payload, classes, settings or DemoSettings(), out, **kw)


def test_label_equals_segmenter_and_table_lists_every_class(
    segmenter, tiny_clip_file, image_file, tmp_path
):
    answer = _answer(segmenter, {"path": str(image_file), "orig_name": image_file.name}, tmp_path)
    reference = Segmenter.from_pretrained("maskclip", weights=tiny_clip_file, **MODEL)
    reference.set_vocabulary(CLASSES)
    expected = reference(image_file).label
    label = np.array(Image.open(answer.label_path))
    assert label.shape == (40, 56)
    assert np.array_equal(label, expected)
    assert answer.label_path.name == "street_scene_label.png"
    # every class by its first name, absent ones at 0 %, shares from the label map
    counts = np.bincount(expected.reshape(-1), minlength=3)
    assert [row[0] for row in answer.table] == ["cat", "sofa", "floor"]
    assert [row[1] for row in answer.table] == pytest.approx(100 * counts / counts.sum(), abs=0.01)
    assert answer.overlay.width > 56 and answer.overlay.height >= 40  # legend panel
    assert "street scene.png" in answer.message and "56x40" in answer.message


def test_absent_classes_are_listed_at_zero(segmenter, image_file, tmp_path):
    # 40 classes on a 40x56 image: a tiny random CLIP picks only some of them
    names = [f"thing {i}" for i in range(40)]
    answer = _answer(segmenter, str(image_file), tmp_path, classes=", ".join(names))
    assert [row[0] for row in answer.table] == names
    shares = [row[1] for row in answer.table]
    assert 0.0 in shares and sum(shares) == pytest.approx(100, abs=0.1)


def test_bundled_photo_equals_vocaseg_segment(capsys, offline_cache, tiny_clip_file, tmp_path):
    settings = [arg for key, value in MODEL.items() for arg in ("--set", f"{key}={value}")]
    out = tmp_path / "cli"
    code, _, err = run_cli(
        capsys, "segment", PHOTO, "--classes", CLASSES, "--weights", tiny_clip_file, "-o", out,
        *settings,
    )  # fmt: skip
    assert code == 0, err
    segmenter = Segmenter.from_pretrained("maskclip", weights=tiny_clip_file, **MODEL)
    source = {"model": "maskclip", "weights": str(tiny_clip_file)}
    answer = _answer(
        segmenter, {"path": str(PHOTO), "orig_name": "chelsea.png"}, tmp_path, source=source
    )
    cli_png, demo_png = Image.open(out / "chelsea_label.png"), Image.open(answer.label_path)
    assert demo_png.size == (451, 300)
    assert np.array_equal(np.array(demo_png), np.array(cli_png))
    assert demo_png.getpalette() == cli_png.getpalette()
    cli_json = json.loads((out / "chelsea.json").read_text())
    demo_json = json.loads(answer.json_path.read_text())
    assert set(demo_json) == set(cli_json) | {"demo"}
    for key in ("height", "width", "model", "weights", "classes", "clip", "background"):
        assert demo_json[key] == cli_json[key], key
    assert demo_json["image"] == "chelsea.png"
    assert demo_json["demo"] == {"prob_thd": 0.0, "inference": WINDOW}


def test_whole_image_setting_equals_a_model_built_without_windows(
    segmenter, tiny_clip_file, image_file, tmp_path
):
    whole = Segmenter.from_pretrained("maskclip", weights=tiny_clip_file, **{**MODEL, "window": 0})
    whole.set_vocabulary(CLASSES)
    windowed = Segmenter.from_pretrained("maskclip", weights=tiny_clip_file, **MODEL)
    windowed.set_vocabulary(CLASSES)
    assert not np.array_equal(whole(image_file).label, windowed(image_file).label)
    for settings, reference in (
        (DemoSettings(whole_image=True), whole),
        (DemoSettings(), windowed),  # back to the model's own windows without reloading
    ):
        answer = _answer(segmenter, str(image_file), tmp_path, settings=settings)
        label = np.array(Image.open(answer.label_path))
        assert np.array_equal(label, reference(image_file).label)


def test_apply_settings_switches_windows_and_back(segmenter):
    own = segmenter.model.preprocess
    apply_settings(segmenter, DemoSettings.from_widgets(0.3, WHOLE))
    assert segmenter.model.preprocess.window is None
    assert segmenter.model.preprocess.short_side == own.short_side
    assert segmenter.model.background.prob_thd == 0.3
    apply_settings(segmenter, DemoSettings.from_widgets(0.0, WINDOW))
    assert segmenter.model.preprocess == own


@pytest.mark.parametrize("classes", [CLASSES, "cat, background; backdrop, floor"])
def test_background_threshold(segmenter, tiny_clip_file, image_file, tmp_path, classes):
    reference = Segmenter.from_pretrained("maskclip", weights=tiny_clip_file, **MODEL)
    reference.set_vocabulary(classes)
    scores = reference(image_file).scores  # [K, H, W] class probabilities
    best = scores.amax(0)
    threshold = float(best.median())
    vocabulary = Vocabulary.parse(classes)
    named = [i for i, names in enumerate(vocabulary.classes) if "background" in names]
    background = named[0] if named else len(vocabulary)
    expected = torch.where(best < threshold, background, scores.argmax(0)).numpy()
    answer = _answer(
        segmenter, str(image_file), tmp_path, classes=classes, settings=DemoSettings(threshold)
    )
    label = np.array(Image.open(answer.label_path))
    assert np.array_equal(label, expected)
    assert (label == background).mean() >= 0.4  # about half the pixels fall below the median
    names = [row[0] for row in answer.table]
    assert names == vocabulary.class_names + ([] if named else [BACKGROUND])
    record = json.loads(answer.json_path.read_text())
    assert record["classes"][background]["name"] == BACKGROUND
    assert record["demo"]["prob_thd"] == threshold


def test_threshold_outside_unit_interval_is_refused():
    _, message = guarded(DemoSettings.from_widgets, 1.5, WINDOW)
    assert message.startswith("Error: ") and "[0, 1]" in message


@pytest.mark.parametrize("text", ["", "   ", " , ;, "])
def test_empty_vocabulary_message(segmenter, image_file, tmp_path, text):
    answer, message = guarded(_answer, segmenter, str(image_file), tmp_path, text)
    assert answer is None
    assert message.startswith("Error: the Classes box is empty;") and "e.g." in message


def test_too_many_classes_message(segmenter, image_file, tmp_path):
    text = ", ".join(f"c{i}" for i in range(MAX_CLASSES + 1))
    answer, message = guarded(_answer, segmenter, str(image_file), tmp_path, text)
    assert answer is None
    assert f"{MAX_CLASSES + 1} classes" in message and f"at most {MAX_CLASSES}" in message
    assert len(parse_classes(", ".join(f"c{i}" for i in range(MAX_CLASSES)))) == MAX_CLASSES


def test_unreadable_and_missing_image_messages(segmenter, tmp_path):
    bad = tmp_path / "upload123.png"
    bad.write_text("not an image")
    payload = {"path": str(bad), "orig_name": "holiday.png"}
    answer, message = guarded(_answer, segmenter, payload, tmp_path)
    assert answer is None
    assert "'holiday.png'" in message and "not an image file" in message
    assert str(tmp_path) not in message
    for nothing in (None, {"path": None}):
        _, message = guarded(_answer, segmenter, nothing, tmp_path)
        assert message.startswith("Error: no image given; upload one")


def test_memory_cap_names_the_limit():
    vocabulary = Vocabulary.parse(", ".join(f"c{i}" for i in range(1000)))
    check_memory(300, 451, vocabulary)
    with pytest.raises(ImageError, match="GiB of scores; use fewer classes"):
        check_memory(4000, 6000, vocabulary)


def test_unexpected_errors_are_logged_not_shown(
    segmenter, image_file, tmp_path, caplog, monkeypatch
):
    def broken(arrays):
        raise RuntimeError("CUDA out of memory at 0xdeadbeef")

    monkeypatch.setattr(segmenter, "predict_arrays", broken)
    with caplog.at_level(logging.ERROR, logger="vocaseg.demo"):
        answer, message = guarded(_answer, segmenter, str(image_file), tmp_path)
    assert answer is None
    assert message == "Error: something went wrong on the server; the details are in its log."
    assert "deadbeef" in caplog.text and "Traceback" in caplog.text


def test_vocabulary_errors_keep_their_message():
    with pytest.raises(VocabularyError, match="appears twice"):
        parse_classes("cat, dog, cat")


def test_vocabulary_is_encoded_once_across_requests(segmenter, image_file, tmp_path, monkeypatch):
    calls = []
    encode = segmenter.model.encode_vocabulary
    monkeypatch.setattr(
        segmenter.model, "encode_vocabulary", lambda v: calls.append(v) or encode(v)
    )
    for classes in (CLASSES, "dog, cat", CLASSES, "dog, cat"):
        _answer(segmenter, str(image_file), tmp_path, classes=classes)
    assert [len(v) for v in calls] == [3, 2]
