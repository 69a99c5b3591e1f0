"""Background protocols of datasets-and-metrics.md §4.1 on hand-made probabilities."""

import pytest
import torch

from vocaseg.errors import UserError
from vocaseg.inference.background import (
    BackgroundProtocol,
    clamp_to_background,
    class_probabilities,
    groupvit_background,
    parse_background,
    threshold_background,
    with_background_names,
)
from vocaseg.text.vocab import Vocabulary


def probs(*pixels):
    """[1, K, 1, P] probabilities from per-pixel lists."""
    return torch.tensor(pixels, dtype=torch.float32).T[None, :, None, :]


def test_threshold_sends_unsure_pixels_to_background():
    scores = probs([0.05, 0.90, 0.05], [0.3, 0.35, 0.35], [0.1, 0.1, 0.8])
    labels = threshold_background(scores, prob_thd=0.5)
    assert labels.tolist() == [[[1, 0, 2]]]
    assert threshold_background(scores, prob_thd=0.0).tolist() == [[[1, 1, 2]]]


def test_threshold_area_rule_drops_small_classes():
    # Class 2 wins 1 pixel of 10 foreground pixels: with area_thd 0.2 it is dropped and the
    # pixel falls to its next best class (1).
    pixels = [[0.0, 0.9, 0.1]] * 9 + [[0.0, 0.4, 0.6]]
    labels = threshold_background(probs(*pixels), prob_thd=0.1, area_thd=0.2)
    assert labels.flatten().tolist() == [1] * 10
    labels = threshold_background(probs(*pixels), prob_thd=0.1, area_thd=0.05)
    assert labels.flatten().tolist() == [1] * 9 + [2]


def test_softmax_with_logit_scale_and_synonym_max():
    cos = probs([0.2, 0.25, 0.3])  # queries: class 0, class 1 (two synonyms)
    p = class_probabilities(cos, logit_scale=50.0, query_to_class=[0, 1, 1])
    expected = (50 * cos).softmax(1)
    assert p.shape == (1, 2, 1, 1)
    assert torch.allclose(p[:, 1], expected[:, 1:].amax(1))
    assert torch.allclose(p[:, 0], expected[:, 0])


def test_groupvit_rule_shifts_foreground():
    scores = probs([0.97, 0.03], [0.6, 0.4])
    assert groupvit_background(scores, threshold=0.95).tolist() == [[[1, 0]]]


def test_catseg_clamps_distractors():
    labels = torch.tensor([[3, 20, 25, 58]])
    assert clamp_to_background(labels, 20).tolist() == [[3, 20, 20, 20]]


def test_protocol_vocabularies(tmp_path):
    voc = Vocabulary.from_names(["background", "cat", "dog"])
    names = tmp_path / "bg.txt"
    names.write_text("sky\nwall\n")
    prompt = parse_background(f"bg:prompt,names={names}")
    assert prompt.vocabulary(voc).classes[0] == ("sky", "wall")
    assert parse_background("bg:groupvit").vocabulary(voc).class_names == ["cat", "dog"]
    voc20b = Vocabulary.from_names(["cat", "dog", "background"])
    extra = tmp_path / "extra.txt"
    extra.write_text("grass\nsky\n")
    catseg = parse_background(f"bg:catseg-20b,background=2,extra={extra}")
    assert catseg.vocabulary(voc20b).class_names == ["cat", "dog", "grass", "sky"]
    scores = probs([0.1, 0.2, 0.6, 0.1])
    assert catseg.labels(scores).tolist() == [[[2]]]
    assert with_background_names(voc, ["stuff"]).class_names == ["stuff", "cat", "dog"]


def test_parse_and_errors():
    p = parse_background("bg:threshold,prob_thd=0.2,area_thd=0.1,logit_scale=65")
    assert p.record() == {
        "id": "bg:threshold",
        "prob_thd": 0.2,
        "area_thd": 0.1,
        "logit_scale": 65.0,
    }
    assert parse_background(None).id == "bg:none"
    with pytest.raises(UserError, match="unknown background protocol"):
        parse_background("bg:magic")
    with pytest.raises(UserError, match="key=value"):
        parse_background("bg:threshold,0.1")
    with pytest.raises(UserError, match="extra=FILE"):
        BackgroundProtocol("bg:catseg-20b").vocabulary(Vocabulary.from_names(["a"]))


def test_threshold_protocol_reads_model_probabilities_as_they_are():
    # predict_scores returns what finalize gives: class probabilities (MaskCLIP has already applied
    # softmax(logit_scale·cos) and the synonym max). The protocol must not softmax them again.
    scores = probs([0.2, 0.45, 0.35], [0.1, 0.8, 0.1])
    assert parse_background("bg:threshold,prob_thd=0.5").labels(scores).tolist() == [[[0, 1]]]
    assert parse_background("bg:groupvit,threshold=0.5").labels(scores[:, 1:]).tolist() == [
        [[0, 1]]
    ]
    # A model that returns cosines names the scale: softmax(50·cos) (max ≈ 0.77) is thresholded.
    cos = probs([0.2, 0.25, 0.22])
    rule = parse_background("bg:threshold,prob_thd=0.7,logit_scale=50")
    assert rule.labels(cos).tolist() == [[[1]]]
