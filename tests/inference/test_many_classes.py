"""Many classes: scoring a run of classes at a time gives the labels (and scores) of scoring them all
at once, for every method, background protocol, window layout and PAMR (docs/contract.md §3).

The chunked path is forced with a small ``chunk_size``; the reference is ``predict_scores``, the
path that holds every class at full resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vocaseg.background import make_protocol, parse_background
from vocaseg.errors import UserError
from vocaseg.inference.predict import class_chunks, predict_labels, predict_scores
from vocaseg.inference.segmenter import Segmenter
from vocaseg.models.registry import builtin_models, create_model, get_entry
from vocaseg.scoring import RunningArgmax
from vocaseg.text.vocab import Vocabulary

METHODS = builtin_models()
#: 7 classes, 10 queries; "background" is class 6.
NAMES = ["cat", "sofa; couch", "floor", "wall; partition; screen", "sky", "tree; bush", "background"]  # fmt: skip
PROTOCOLS = {
    "none": "bg:none",
    "threshold": "bg:threshold,prob_thd=0.3",
    "area": "bg:threshold,area_thd=0.2",
    "groupvit": "bg:groupvit,prob_thd=0.5",
    "catseg": "bg:catseg-20b,names={distractors}",
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, get_entry(name).tiny, pretrained=False).eval()


def both_paths(model, images: torch.Tensor, chunk_size: int, names=NAMES):
    vocabulary = model.background.prepare(Vocabulary.from_names(names))
    with torch.no_grad():
        text = model.text_for(vocabulary)
        reference = predict_scores(model, images, text, vocabulary)
        kept = predict_labels(model, images, text, vocabulary, chunk_size=chunk_size)
        labels = predict_labels(
            model, images, text, vocabulary, chunk_size=chunk_size, keep_scores=False
        )
    return reference, kept, labels


def assert_same(reference, kept, labels):
    assert labels.scores is None
    assert torch.equal(labels.label, reference.argmax(1))
    assert torch.equal(kept.label, reference.argmax(1))
    assert kept.scores is not None and kept.scores.shape == reference.shape
    assert torch.allclose(kept.scores, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", METHODS)
def test_chunks_give_the_labels_of_every_class_at_once(name, protocol, tmp_path):
    model = tiny(name)
    distractors = tmp_path / "distractors.txt"
    distractors.write_text("grass\nrock\nroad\n", encoding="utf-8")
    model.update_settings(**parse_background(PROTOCOLS[protocol].format(distractors=distractors)))
    assert model.chunkable, f"{name} scores every class at once"
    images = torch.rand(2, 3, 37, 53) * 255
    reference, kept, labels = both_paths(model, images, chunk_size=2)
    assert_same(reference, kept, labels)
    assert reference.std(dim=1).mean() > 0  # classes score differently: a real comparison


@pytest.mark.parametrize("name", METHODS)
def test_chunks_with_overlapping_windows(name):
    model = tiny(name)
    model.update_settings(short_side=0, window=32, stride=20)
    images = torch.rand(1, 3, 45, 70) * 255
    assert_same(*both_paths(model, images, chunk_size=3))


def test_chunks_with_pamr_and_key_smoothing():
    model = tiny("maskclip")
    model.update_settings(pamr_steps=3)
    images = torch.rand(1, 3, 40, 48) * 255
    assert_same(*both_paths(model, images, chunk_size=2))
    model = tiny("maskclip")
    model.update_settings(ks_thresh=0.2, pd_thresh=0.1)
    assert_same(*both_paths(model, images, chunk_size=2))


def test_tagclip_trusty_map_and_seen_calibration_reach_every_chunk():
    model = tiny("tagclip")
    vocabulary = Vocabulary.from_names(NAMES[:-1], seen=[0, 2, 4])
    vocabulary = model.background.prepare(vocabulary)
    images = torch.rand(1, 3, 40, 40) * 255
    with torch.no_grad():
        text = model.text_for(vocabulary)
        reference = predict_scores(model, images, text, vocabulary)
        chunked = predict_labels(model, images, text, vocabulary, chunk_size=1)
    assert torch.equal(chunked.label, reference.argmax(1))
    assert torch.allclose(chunked.scores, reference, atol=1e-5, rtol=1e-4)


def test_a_class_with_more_names_than_a_chunk_is_a_run_of_its_own():
    vocabulary = Vocabulary.from_names(["a", "b; c; d; e", "f", "g", "h; i"])
    chunks = class_chunks(vocabulary, 3)
    assert chunks == [range(0, 1), range(1, 2), range(2, 4), range(4, 5)]
    assert class_chunks(vocabulary, 100) == [range(0, 5)]
    assert class_chunks(vocabulary, 1) == [range(i, i + 1) for i in range(5)]


def test_running_argmax_equals_argmax_with_ties_and_any_order():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (2, 9, 5, 6), generator=generator).float()  # many ties
    order = torch.randperm(9, generator=generator)
    best = RunningArgmax()
    for part in order.split(4):  # chunks of classes in a shuffled order
        best.update(scores[:, part], part)
    assert torch.equal(best.index, scores.argmax(1))
    assert torch.equal(best.value, scores.amax(1))


def test_segmenter_keeps_scores_only_when_asked_and_labels_never_change():
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    results = {}
    for keep in (True, False, None):
        torch.manual_seed(0)
        model = create_model("maskclip", get_entry("maskclip").tiny, pretrained=False)
        segmenter = Segmenter(model, keep_scores=keep, chunk_size=2)
        segmenter.set_vocabulary(NAMES)
        results[keep] = segmenter(image)
    assert results[False].scores is None
    assert results[True].scores is not None and results[None].scores is not None  # small: kept
    for result in results.values():
        assert np.array_equal(result.label, results[True].label)
        assert np.allclose(result.areas, results[True].areas)


def test_bad_chunk_size_and_smoothing_without_scores_are_one_line():
    model = create_model("maskclip", get_entry("maskclip").tiny, pretrained=False)
    with pytest.raises(UserError, match="chunk_size must be at least 1"):
        Segmenter(model, chunk_size=0)
    segmenter = Segmenter(model, keep_scores=False)
    segmenter.set_vocabulary(NAMES)
    frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(UserError, match="keep_scores=False"):
        next(iter(segmenter.segment_video(frames, smoothing=2)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_argmax_only_protocols_ignore_a_monotone_change_of_the_scores(protocol, tmp_path):
    """What lets labels skip the normaliser pass (``class_order``) must hold for the flag."""
    distractors = tmp_path / "distractors.txt"
    distractors.write_text("grass\nrock\nroad\n", encoding="utf-8")
    settings = parse_background(PROTOCOLS[protocol].format(distractors=distractors))
    names = settings.pop("background_names", None)
    background = make_protocol(
        settings["background"], settings.get("prob_thd", 0.0), settings.get("area_thd", 0.0),
        Path(names).read_text().split() if names else (),
    )  # fmt: skip
    vocabulary = background.prepare(Vocabulary.from_names(NAMES))
    scored = background.scored_vocabulary(vocabulary)
    probs = torch.rand(2, len(scored), 9, 11, generator=torch.Generator().manual_seed(1))
    labels = background.labels(lambda: [(0, probs)], vocabulary)
    moved = background.labels(lambda: [(0, 5 * probs.log() - 3)], vocabulary)  # same order
    assert torch.equal(labels, moved) == background.argmax_only
