"""Background protocols (vocaseg.background) on hand-made class scores."""

import pytest
import torch

from vocaseg.background import make_protocol, parse_background
from vocaseg.errors import ConfigError
from vocaseg.scoring import drop_small_classes, max_over_queries
from vocaseg.text.vocab import Vocabulary


def probs(*pixels):
    """[1, K, 1, P] scores from per-pixel lists."""
    return torch.tensor(pixels, dtype=torch.float32).T[None, :, None, :]


VOC = Vocabulary.from_names(["background", "cat", "dog"])


def labels(protocol, scores, vocabulary=VOC):
    return protocol.apply(scores, vocabulary).argmax(1).flatten().tolist()


def test_background_class_is_marked_by_name_or_index():
    assert VOC.background == 0
    assert Vocabulary.from_names(["cat", "Background"]).background == 1
    assert Vocabulary.from_names(["cat", "dog"]).background is None
    assert Vocabulary((("cat",), ("sky",)), background=1).background == 1


def test_threshold_sends_unsure_pixels_to_background():
    scores = probs([0.05, 0.90, 0.05], [0.3, 0.35, 0.35], [0.1, 0.1, 0.8])
    assert labels(make_protocol("bg:threshold", prob_thd=0.5), scores) == [1, 0, 2]
    assert labels(make_protocol("bg:threshold", prob_thd=0.0), scores) == [1, 1, 2]


def test_threshold_uses_the_vocabularys_background_index():
    vocab = Vocabulary.from_names(["cat", "dog", "background"])
    scores = probs([0.4, 0.35, 0.25], [0.9, 0.05, 0.05])
    assert labels(make_protocol("bg:threshold", prob_thd=0.5), scores, vocab) == [2, 0]


def test_threshold_area_rule_drops_small_classes():
    # Class 2 wins 1 pixel of 10 foreground pixels: with area_thd 0.2 it is dropped and the
    # pixel falls to its next best class (1).
    pixels = [[0.0, 0.9, 0.1]] * 9 + [[0.0, 0.4, 0.6]]
    assert labels(make_protocol("bg:threshold", 0.1, 0.2), probs(*pixels)) == [1] * 10
    assert labels(make_protocol("bg:threshold", 0.1, 0.05), probs(*pixels)) == [1] * 9 + [2]
    dropped = drop_small_classes(probs(*pixels), 0.2, background=0)
    assert dropped[0, 2].abs().sum() == 0


def test_prob_thd_alone_means_threshold():
    assert make_protocol("bg:none", prob_thd=0.3).id == "bg:threshold"
    assert make_protocol("bg:none").id == "bg:none"


def test_prepare_adds_background_only_when_needed():
    vocab = Vocabulary.from_names(["cat", "dog"])
    prepared = make_protocol("bg:threshold", prob_thd=0.3).prepare(vocab)
    assert prepared.class_names == ["cat", "dog", "background"] and prepared.background == 2
    assert make_protocol("bg:none").prepare(vocab) is vocab
    assert make_protocol("bg:threshold", prob_thd=0.3).prepare(VOC) is VOC


def test_groupvit_does_not_score_background_and_inserts_it():
    protocol = make_protocol("bg:groupvit", prob_thd=0.95)
    assert protocol.scored_vocabulary(VOC).class_names == ["cat", "dog"]
    scores = probs([0.97, 0.03], [0.6, 0.4])  # over the scored vocabulary (cat, dog)
    out = protocol.apply(scores, VOC)
    assert out.shape == (1, 3, 1, 2)
    assert out.argmax(1).flatten().tolist() == [1, 0]


def test_catseg_distractors_become_background():
    voc20b = Vocabulary.from_names(["cat", "dog", "background"])
    catseg = make_protocol("bg:catseg-20b", names=["grass", "sky"])
    assert catseg.scored_vocabulary(voc20b).class_names == ["cat", "dog", "grass", "sky"]
    scores = probs([0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1])
    assert labels(catseg, scores, voc20b) == [2, 0]
    with pytest.raises(ConfigError, match="distractor names"):
        make_protocol("bg:catseg-20b").scored_vocabulary(voc20b)


def test_prompt_renames_the_background():
    prompt = make_protocol("bg:prompt", names=["sky", "wall"])
    assert prompt.scored_vocabulary(VOC).classes[0] == ("sky", "wall")
    assert prompt.scored_vocabulary(VOC).background == 0


def test_synonym_max():
    scores = probs([0.2, 0.25, 0.3])  # queries: class 0, class 1 (two synonyms)
    out = max_over_queries(scores, [0, 1, 1], 2)
    assert out.flatten().tolist() == pytest.approx([0.2, 0.3])


def test_parse_and_errors(tmp_path):
    settings = parse_background("bg:threshold,prob_thd=0.2,area_thd=0.1,names=bg.txt")
    assert settings == {
        "background": "bg:threshold",
        "prob_thd": 0.2,
        "area_thd": 0.1,
        "background_names": "bg.txt",
    }
    with pytest.raises(ConfigError, match="unknown background protocol"):
        parse_background("bg:magic")
    with pytest.raises(ConfigError, match="prob_thd=X"):
        parse_background("bg:threshold,0.1")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        make_protocol("bg:threshold", prob_thd=1.5)
    with pytest.raises(ConfigError, match="needs a background class"):
        make_protocol("bg:groupvit", 0.5).apply(
            probs([0.5, 0.5]), Vocabulary.from_names(["a", "b"])
        )


def test_record_names_every_setting():
    record = make_protocol("bg:threshold", 0.2, 0.1, ["sky"]).record()
    assert record == {"id": "bg:threshold", "prob_thd": 0.2, "area_thd": 0.1, "names": ["sky"]}
