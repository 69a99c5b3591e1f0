"""Segmenter: every input type and image format, odd sizes, mixed batches, the vocabulary cache,
agreement with the evaluator's ``predict_scores``, model folders and bf16 on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vocaseg.errors import ImageError, UserError, VocabularyError
from vocaseg.inference.predict import predict_scores
from vocaseg.inference.segmenter import SegmentationResult, Segmenter
from vocaseg.models.folder import save_model
from vocaseg.models.registry import create_model

CLASSES = ["cat", "sofa; couch", "floor"]


@pytest.fixture(autouse=True)
def _text_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def model(tiny_vit_clip):
    return create_model("maskclip", clip=tiny_vit_clip, templates="single", short_side=48, window=0)


@pytest.fixture
def seg(model):
    segmenter = Segmenter(model)
    segmenter.set_vocabulary(CLASSES)
    return segmenter


def _rgb(h=30, w=44, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_result_fields_and_agreement_with_predict_scores(seg, model):
    image = _rgb()
    result = seg(image)
    assert isinstance(result, SegmentationResult)
    assert result.label.shape == (30, 44) and result.scores.shape == (3, 30, 44)
    assert result.class_names == ["cat", "sofa", "floor"]
    assert result.areas.sum() == pytest.approx(1.0)
    assert set(result.area_dict()) == {"cat", "sofa", "floor"}
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        scores = predict_scores(model, batch, seg._text, seg.vocabulary)
    assert np.array_equal(result.label, scores.argmax(1)[0].numpy())


def test_every_input_type_gives_the_same_labels(seg, tmp_path):
    image = _rgb()
    Image.fromarray(image).save(tmp_path / "a.png")
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    inputs = [
        tmp_path / "a.png",
        str(tmp_path / "a.png"),
        Image.fromarray(image),
        tensor,
        tensor.float() / 255,
        image.astype(np.float32) / 255,
    ]
    reference = seg(image).label
    for item in inputs:
        assert np.array_equal(seg(item).label, reference), type(item)


def test_image_modes_are_converted(seg, tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (24, 40), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(_rgb(24, 40)).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(_rgb(24, 40)).convert("P").save(tmp_path / "pal.png")
    results = seg([tmp_path / n for n in ("gray.png", "gray16.png", "rgba.png", "pal.png")])
    assert all(r.label.shape == (24, 40) for r in results)
    assert np.array_equal(results[0].label, results[1].label)  # 16-bit scaled to 8-bit


def test_exif_orientation_is_applied(seg, tmp_path):
    image = Image.fromarray(_rgb(20, 50))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert seg(tmp_path / "rot.jpg").label.shape == (50, 20)


def test_odd_sizes_and_mixed_batches(seg):
    images = [_rgb(17, 900), _rgb(30, 44, 1), _rgb(30, 44, 2), _rgb(64, 33)]
    results = seg(images, batch_size=2)
    assert [r.label.shape for r in results] == [(17, 900), (30, 44), (30, 44), (64, 33)]
    for image, result in zip(images, results):  # batching does not change any result
        assert np.array_equal(seg(image).label, result.label)


def test_large_image(model):
    seg = Segmenter(model)
    seg.set_vocabulary(["a", "b"])
    assert seg(_rgb(700, 1100)).label.shape == (700, 1100)


def test_vocabulary_is_encoded_once(model, monkeypatch):
    calls = []
    original = model.encode_vocabulary
    monkeypatch.setattr(model, "encode_vocabulary", lambda v: calls.append(v) or original(v))
    seg = Segmenter(model)
    seg.set_vocabulary(CLASSES)
    for i in range(5):
        seg(_rgb(seed=i))
    seg(_rgb(seed=9))
    seg.set_vocabulary(["x", "y"])
    seg.set_vocabulary(CLASSES)  # cached
    assert len(calls) == 2


def test_window_covering_the_image_equals_whole_image(tiny_vit_clip):
    settings = {"templates": "single", "short_side": 48}
    whole = Segmenter(create_model("maskclip", clip=tiny_vit_clip, window=0, **settings))
    slid = Segmenter(create_model("maskclip", clip=tiny_vit_clip, window=96, **settings))
    small = Segmenter(create_model("maskclip", clip=tiny_vit_clip, window=32, **settings))
    for seg in (whole, slid, small):
        seg.set_vocabulary(CLASSES)
    image = _rgb(48, 80)
    assert torch.allclose(whole(image).scores, slid(image).scores, atol=1e-6)
    assert small(image).label.shape == (48, 80)


def test_model_folder_and_bf16(model, tmp_path):
    save_model(model, tmp_path / "m")
    seg = Segmenter.from_pretrained(tmp_path / "m")
    seg.set_vocabulary(CLASSES)
    fp32 = seg(_rgb()).label
    reference = Segmenter(model)
    reference.set_vocabulary(CLASSES)
    assert np.array_equal(fp32, reference(_rgb()).label)
    half = Segmenter.from_pretrained(tmp_path / "m", dtype="bfloat16")
    half.set_vocabulary(CLASSES)
    assert (half(_rgb()).label == fp32).mean() > 0.5


def test_bad_inputs_raise_user_errors(seg, tmp_path):
    (tmp_path / "not.png").write_text("hello")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:400])
    with pytest.raises(ImageError, match="not found"):
        seg(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="not an image"):
        seg(tmp_path / "not.png")
    with pytest.raises(ImageError, match="truncated"):
        seg(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match=r"\[H, W, 3\]"):
        seg(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(VocabularyError):
        seg.set_vocabulary([])
    with pytest.raises(VocabularyError, match="twice"):
        seg.set_vocabulary(["cat", "Cat"])
    with pytest.raises(VocabularyError, match="too long"):
        seg.set_vocabulary(["cat", "word " * 80])
    with pytest.raises(UserError, match="unknown model"):
        Segmenter.from_pretrained("no-such-model")
    with pytest.raises(UserError, match="no vocabulary"):
        Segmenter(seg.model)(_rgb())
