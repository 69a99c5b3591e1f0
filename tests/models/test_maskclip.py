"""MaskCLIP model: text ensembles, synonyms, windows, background rules, presets, KS/PD switches
and the model-folder round-trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vocaseg.background import make_protocol
from vocaseg.clip.dense import dense_features
from vocaseg.errors import UserError
from vocaseg.inference.predict import predict_scores
from vocaseg.models.folder import load_model, save_model
from vocaseg.models.maskclip import PRESETS
from vocaseg.models.registry import create_model, list_models
from vocaseg.scoring import drop_small_classes, max_over_queries
from vocaseg.text.templates import get_templates
from vocaseg.text.vocab import Vocabulary


@pytest.fixture(autouse=True)
def _text_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))


def _model(clip, **overrides):
    settings = {"templates": "single", "short_side": 64, "window": 0, **overrides}
    return create_model("maskclip", clip=clip, **settings)


VOCAB = Vocabulary.from_names(["cat", "sofa; couch", "floor"])


def test_presets_are_registered_and_set_their_fields(tiny_vit_clip):
    assert set(PRESETS) <= set(list_models())
    clear = create_model("clearclip", clip=tiny_vit_clip)
    assert (clear.config.attn, clear.config.residual, clear.config.ffn) == ("qq", False, False)
    assert clear.preprocess.window == 448 and clear.preprocess.stride == 224
    ref = create_model("maskclip-ref", clip=tiny_vit_clip)
    assert ref.preprocess.window is None and ref.preprocess.short_side == 512
    assert ref.preprocess.mean == pytest.approx((123.675, 116.28, 103.53))
    assert create_model("maskclip", clip=tiny_vit_clip).preprocess.size_divisor == 16
    assert create_model("naclip", clip=tiny_vit_clip).preprocess.size_divisor == 1


def test_text_ensembles_are_unit_norm_and_per_query(tiny_vit_clip):
    model = _model(tiny_vit_clip, templates="maskclip85")
    text = model.encode_vocabulary(VOCAB)
    assert text.shape == (4, tiny_vit_clip.config.embed_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(4), atol=1e-5)
    templates = get_templates("maskclip85")
    assert len(templates) == 85 and templates[:80] == get_templates("imagenet80")


def test_forward_is_cosine_of_dense_features(tiny_vit_clip):
    model = _model(tiny_vit_clip)
    images = torch.randn(2, 3, 48, 64)
    text = torch.randn(4, tiny_vit_clip.config.embed_dim)
    with torch.no_grad():
        scores = model(images, text)
        feats = dense_features(tiny_vit_clip, images).features
    expected = torch.einsum("bdhw,qd->bqhw", feats, F.normalize(text, dim=-1))
    assert scores.shape == (2, 4, 3, 4)
    assert torch.allclose(scores, expected, atol=1e-6)


def test_scores_are_float32_cosines_under_autocast(tiny_vit_clip):
    # The encoder may run in bf16; the cosines (then × logit_scale) must not be rounded to bf16.
    model = _model(tiny_vit_clip)
    images = torch.randn(1, 3, 48, 64)
    text = torch.randn(4, tiny_vit_clip.config.embed_dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model(images, text)
        feats = dense_features(tiny_vit_clip, images).features
    expected = torch.einsum("bdhw,qd->bqhw", feats.float(), F.normalize(text, dim=-1))
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, expected, atol=1e-6)


def test_key_smoothing_on_gives_query_probabilities(tiny_vit_clip):
    model = _model(tiny_vit_clip, ks_thresh=1.0, pd_thresh=0.5)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 48), torch.randn(3, tiny_vit_clip.config.embed_dim))
    assert torch.allclose(out.sum(dim=1), torch.ones(1, 2, 3), atol=1e-5)


def test_max_prob_is_the_max_over_each_class_queries():
    probs = torch.rand(2, 4, 3, 3)
    out = max_over_queries(probs, VOCAB.query_to_class, 3)
    assert torch.equal(out[:, 0], probs[:, 0])
    assert torch.equal(out[:, 1], torch.maximum(probs[:, 1], probs[:, 2]))
    assert torch.equal(out[:, 2], probs[:, 3])


def test_finalize_applies_logit_scale_softmax_then_max(tiny_vit_clip):
    model = _model(tiny_vit_clip, logit_scale=40.0)
    stitched = torch.randn(1, 4, 5, 5) * 0.1
    probs = torch.softmax(40.0 * stitched, dim=1)
    expected = torch.stack([probs[:, 0], probs[:, 1:3].amax(1), probs[:, 3]], dim=1)
    assert torch.allclose(model.finalize(stitched, VOCAB, model.background), expected, atol=1e-6)


def test_background_threshold_gives_low_pixels_the_background_class():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.3, 0.35, 0.35], [0.1, 0.1, 0.8]]).T
    probs = probs.reshape(1, 3, 1, 3)  # pixel maxima 0.5, 0.35, 0.8
    vocab = Vocabulary.from_names(["background", "cat", "dog"])
    label = make_protocol("bg:threshold", 0.4).apply(probs, vocab).argmax(dim=1)
    assert label.tolist() == [[[1, 0, 2]]]


def test_area_threshold_zeroes_a_small_foreground_class():
    # 10 pixels: class 1 wins 8, class 2 wins 1, class 0 (background) wins 1.
    probs = torch.zeros(1, 3, 1, 10)
    probs[0, 1, 0, :8] = 0.9
    probs[0, 2, 0, 8] = 0.9
    probs[0, 0, 0, 9] = 0.9
    probs[0, 0, 0, 8] = 0.5  # runner-up where class 2 is dropped
    out = drop_small_classes(probs, 0.2, 0)  # class 2: 1 <= 0.2 * 9 foreground pixels
    assert torch.all(out[0, 2] == 0)
    assert out.argmax(dim=1)[0, 0].tolist() == [1] * 8 + [0, 0]
    assert torch.equal(drop_small_classes(probs, 0.05, 0), probs)


def test_window_larger_than_image_equals_whole_image(tiny_vit_clip):
    images = torch.rand(1, 3, 40, 56) * 255
    whole = _model(tiny_vit_clip, short_side=0)
    windowed = _model(tiny_vit_clip, short_side=0, window=64, stride=32)
    text = whole.encode_vocabulary(VOCAB)
    with torch.no_grad():
        a = predict_scores(whole, images, text, VOCAB)
        b = predict_scores(windowed, images, text, VOCAB)
    assert torch.allclose(a, b, atol=1e-6)


def test_sliding_window_covers_the_image_and_keeps_its_size(tiny_vit_clip):
    images = torch.rand(2, 3, 45, 70) * 255  # not multiples of 16: padded, then cut back
    model = _model(tiny_vit_clip, short_side=0, window=32, stride=20)
    vocab = Vocabulary.from_names(["cat", "sofa", "floor"])  # no synonyms: softmax sums to 1
    text = model.encode_vocabulary(vocab)
    with torch.no_grad():
        scores = predict_scores(model, images, text, vocab)
    assert scores.shape == (2, 3, 45, 70)
    assert torch.allclose(scores.sum(dim=1), torch.ones(2, 45, 70), atol=1e-5)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_on_vit_and_resnet(preset, tiny_vit_clip, tiny_rn_clip):
    for clip in (tiny_vit_clip, tiny_rn_clip):
        model = create_model(preset, clip=clip, templates="single", short_side=64, window=0)
        text = model.encode_vocabulary(VOCAB)
        with torch.no_grad():
            scores = predict_scores(model, torch.rand(1, 3, 50, 70) * 255, text, VOCAB)
        assert scores.shape == (1, 3, 50, 70)


def test_training_is_refused(tiny_vit_clip):
    with pytest.raises(UserError, match="training-free"):
        _model(tiny_vit_clip).loss({}, None)


def test_model_folder_round_trip(tiny_vit_clip, tmp_path):
    model = _model(tiny_vit_clip, attn="csa", prob_thd=0.2)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config
    images = torch.rand(1, 3, 32, 48) * 255
    vocab = model.background.prepare(VOCAB)  # bg:threshold adds a "background" class
    assert vocab.class_names[-1] == "background"
    text = model.text_for(vocab)
    with torch.no_grad():
        assert torch.equal(
            predict_scores(model, images, text, vocab), predict_scores(loaded, images, text, vocab)
        )
