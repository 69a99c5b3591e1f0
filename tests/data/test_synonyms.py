"""GKC text diversification data: the shipped COCO-133 lists, validation errors, the WordNet
builder, score files and the per-image vocabulary rewrite."""

from __future__ import annotations

import hashlib
import json
import sys
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from vocaseg.data.synonyms import (
    build_synonyms,
    coco133_class_names,
    load_synonyms,
    normalize_class_name,
    read_synonym_scores,
    sample_vocabulary,
    synonyms_sha256,
    validate_synonyms,
    write_synonym_scores,
    write_synonyms,
)
from vocaseg.errors import UserError, VocabularyError


def test_name_normalisation():
    assert normalize_class_name("wall-other-merged") == "wall"
    assert normalize_class_name("floor-wood") == "floor wood"
    assert normalize_class_name("sky-other-merged") == "sky"
    assert normalize_class_name("door-stuff") == "door stuff"
    names = coco133_class_names()
    assert len(names) == 133 == len(set(names)) and names[131] == "wall" and names[0] == "person"


def test_shipped_lists_follow_the_rules():
    lists = load_synonyms()
    names = coco133_class_names()
    assert list(lists) == names
    owner = {}
    for name, synonyms in lists.items():
        assert synonyms[0] == name and len(synonyms) == len(set(synonyms))
        for synonym in synonyms:
            assert "_" not in synonym and synonym == synonym.strip()
            assert owner.setdefault(synonym.lower(), name) == name, synonym
            assert synonym == name or synonym not in names
    assert {"man", "woman", "child", "boy", "girl"} <= set(lists["person"])
    assert "route" in lists["road"] and "automobile" in lists["car"] and "weed" in lists["grass"]
    assert not {"rodent", "bruise"} & set(lists["mouse"]) and "dog" not in lists["hot dog"]
    assert sum(len(v) > 1 for v in lists.values()) > 120


def test_sha256_is_of_the_file_bytes(tmp_path):
    path = tmp_path / "lists.json"
    write_synonyms(path, {"person": ["person", "man"]})
    assert synonyms_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(synonyms_sha256()) == 64 and synonyms_sha256() != synonyms_sha256(path)
    assert load_synonyms(path)["person"] == ["person", "man"]


NAMES = ["person", "car", "road", "wall"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"persn": ["persn"], "cars": ["cars"]}, r"2 unknown class\(es\): 'persn', 'cars'"),
        ({"car": ["automobile", "car"]}, "must start with the class's own name"),
        ({"car": ["car", "auto"], "road": ["road", "auto"]}, "'auto' is listed for both 'car' and 'road'"),
        ({"road": ["road", "wall"]}, "'wall', a synonym of 'road', is the name of class 'wall'"),
        ({"car": ["car", "Road"]}, "is the name of class 'road'"),
        ({"car": ["car", 3]}, "every synonym must be a non-empty string"),
        (["person"], "must be a JSON object"),
        ({"car": "car"}, "must be a JSON object"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_problem(data, message):
    with pytest.raises(VocabularyError, match=message) as info:
        validate_synonyms(data, NAMES)
    assert "\n" not in str(info.value)


def test_validation_fills_missing_classes_and_reads_underscores():
    lists = validate_synonyms({"car": ["car", "motor_car", "motor_car", "auto"]}, NAMES)
    assert lists == {"person": ["person"], "car": ["car", "motor car", "auto"], "road": ["road"],
                     "wall": ["wall"]}  # fmt: skip


def test_unreadable_files(tmp_path):
    with pytest.raises(VocabularyError, match="not found"):
        load_synonyms(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VocabularyError, match="cannot read synonym file"):
        load_synonyms(tmp_path / "bad.json")


class FakeWordNet:
    """The slice of nltk.corpus.wordnet that build_synonyms uses."""

    NOUN = "n"
    DATA: ClassVar[dict[str, list[list[str]]]] = {
        "car": [["car", "auto", "automobile", "machine"], ["car", "railcar", "railway_car"]],
        "road": [["road", "route"]],
        "traffic_light": [["traffic_light", "traffic_signal", "stoplight"]],
        "wall": [["wall"], ["wall", "paries"], ["machine"]],
    }

    def synsets(self, word, pos=None):
        assert pos == self.NOUN
        return [SimpleNamespace(lemma_names=lambda s=s: s) for s in self.DATA.get(word, [])]


def test_build_synonyms_from_wordnet():
    lists = build_synonyms(["car", "road", "traffic light", "wall", "playingfield"], FakeWordNet())
    assert lists["car"] == ["car", "auto", "automobile", "railcar", "railway car"]  # no "machine"
    assert lists["road"] == ["road", "route"]
    assert lists["traffic light"] == ["traffic light", "traffic signal", "stoplight"]
    assert lists["wall"] == ["wall", "paries"] and lists["playingfield"] == ["playingfield"]
    assert validate_synonyms(lists, list(lists)) == lists


def test_build_synonyms_without_nltk_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "nltk.corpus", None)
    with pytest.raises(UserError, match="pip install nltk") as info:
        build_synonyms(["car"])
    assert "python -m nltk.downloader wordnet" in str(info.value) and "\n" not in str(info.value)


RECORDS = [
    {
        "file_name": "000000000042.png",
        "image_id": 42,
        "segments_info": [
            {"id": 7, "ori_category_id": 3, "syn_category": {"car": 0.5, "auto": 0.05, "motor_car": 0.45}},
            {"id": 9, "ori_category_id": 1, "syn_category": {"person": 1.0}},
        ],
    }
]  # fmt: skip


def test_score_files_round_trip(tmp_path):
    path = tmp_path / "scores.json"
    write_synonym_scores(path, RECORDS, "ab" * 32)
    scores = read_synonym_scores(path, expected_sha256="ab" * 32)
    assert scores.synonyms_sha256 == "ab" * 32
    car, missing, person = scores.for_segments(42, [7, 8, 9])
    assert car == {"car": 0.5, "auto": 0.05, "motor car": 0.45} and missing is None
    assert person == {"person": 1.0} and scores.for_segments(1, [7]) == [None]
    released = tmp_path / "released.json"
    released.write_text(json.dumps(RECORDS))  # the official script's bare list
    assert read_synonym_scores(released).images == scores.images
    with pytest.raises(VocabularyError, match="re-run 'vocaseg gkc score-synonyms'"):
        read_synonym_scores(path, expected_sha256="cd" * 32)
    (tmp_path / "odd.json").write_text(json.dumps([{"image_id": 1}]))
    with pytest.raises(VocabularyError, match="not in the score format"):
        read_synonym_scores(tmp_path / "odd.json")


SYNONYMS = {
    "person": ["person", "man", "woman", "child"],
    "car": ["car", "auto", "automobile", "taxi"],
    "road": ["road", "route", "street"],
    "wall": ["wall"],
}


def check_consistent(vocabulary, labels, new_labels, allowed):
    assert len(vocabulary) == len(set(vocabulary))
    for c, name in enumerate(vocabulary[: len(NAMES)]):
        assert name in SYNONYMS[NAMES[c]]  # every class keeps a valid name
    for i, (label, new) in enumerate(zip(labels, new_labels)):
        assert vocabulary[new] in allowed(i), (i, vocabulary[new])
        assert new == label or new >= len(NAMES)
        if label not in labels[:i]:
            assert new == label  # the first segment of a class claims its column


def test_sampling_without_scores_uses_whole_lists_and_stays_consistent():
    labels = [1, 1, 0, 1, 2, 0, 1]
    drawn = set()
    for seed in range(60):
        vocabulary, new = sample_vocabulary(NAMES, SYNONYMS, labels, np.random.default_rng(seed))
        check_consistent(vocabulary, labels, new, lambda i: SYNONYMS[NAMES[labels[i]]])
        drawn |= {vocabulary[n] for n in new}
        assert vocabulary[3] == "wall"  # a class absent from the image keeps its name
    assert drawn == set(SYNONYMS["person"] + SYNONYMS["car"] + SYNONYMS["road"])


def test_sampling_draws_only_synonyms_above_the_threshold():
    labels = [1, 1, 0, 2]
    scores = [
        {"car": 0.5, "auto": 0.05, "automobile": 0.3, "taxi": 0.15},
        {"car": 0.05, "auto": 0.05, "automobile": 0.05, "taxi": 0.85},
        None,  # not scored: the whole list
        {"road": 0.02, "route": 0.08, "street": 0.1},  # none above 0.1: the class name
    ]
    allowed = [{"car", "automobile", "taxi"}, {"taxi"}, set(SYNONYMS["person"]), {"road"}]
    drawn = [set() for _ in labels]
    for seed in range(60):
        vocabulary, new = sample_vocabulary(NAMES, SYNONYMS, labels, np.random.default_rng(seed),
                                            scores=scores, threshold=0.1)  # fmt: skip
        check_consistent(vocabulary, labels, new, lambda i: allowed[i])
        for i, n in enumerate(new):
            drawn[i].add(vocabulary[n])
    assert drawn == allowed  # uniform over the qualifying names: each one turns up


def test_sampling_rewrite_rule_by_example():
    class Draws:  # a "generator" returning fixed indices into each option list
        def __init__(self, picks):
            self.picks = iter(picks)

        def integers(self, high):
            return next(self.picks)

    labels = [1, 1, 1, 1, 0]
    vocabulary, new = sample_vocabulary(NAMES, SYNONYMS, labels, Draws([0, 2, 1, 2, 3]))
    # car (claims column 1 under its own name), automobile (appended), auto, automobile again
    assert vocabulary == ["child", "car", "road", "wall", "automobile", "auto"]
    assert new == [1, 4, 5, 4, 0]
    vocabulary, new = sample_vocabulary(NAMES, SYNONYMS, [1, 1, 1], Draws([3, 3, 0]))
    assert vocabulary == ["person", "taxi", "road", "wall", "car"] and new == [1, 1, 4]


def test_sampling_is_reproducible():
    lists = load_synonyms()
    names = coco133_class_names()
    labels = [0, 0, 2, 131, 0, 119]
    runs = [sample_vocabulary(names, lists, labels, np.random.default_rng(3)) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0][0]) >= 133
