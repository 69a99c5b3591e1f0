"""``vocaseg gkc build-synonyms`` and ``score-synonyms`` on generated data and a tiny CLIP."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import ClassVar

import pytest

from cli_helpers import run_cli
from gkc_helpers import panoptic_root
from vocaseg.data import synonyms as synonyms_module
from vocaseg.data.synonyms import (
    coco133_class_names,
    load_synonyms,
    read_synonym_scores,
    synonyms_sha256,
)


class FakeWordNet:
    NOUN = "n"
    LEMMAS: ClassVar[dict[str, list[list[str]]]] = {
        "car": [["car", "auto", "automobile"], ["car", "railcar"]],
        "road": [["road", "route"]],
    }

    def synsets(self, word, pos):
        return [SimpleNamespace(lemma_names=lambda ls=ls: ls) for ls in self.LEMMAS.get(word, [])]


def test_build_synonyms_writes_wordnet_lists(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(synonyms_module, "_load_wordnet", FakeWordNet)
    classes = tmp_path / "classes.txt"
    classes.write_text("car\nroad\nsky\n")
    out = tmp_path / "lists.json"
    code, stdout, err = run_cli(
        capsys, "gkc", "build-synonyms", "-o", out, "--classes-file", classes
    )
    assert code == 0, err
    assert json.loads(out.read_text()) == {
        "car": ["car", "auto", "automobile", "railcar"],
        "road": ["road", "route"],
        "sky": ["sky"],
    }
    assert "3 classes, 4 synonyms" in stdout


def test_build_synonyms_without_nltk_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nltk", None)
    code, _, err = run_cli(capsys, "gkc", "build-synonyms", "-o", tmp_path / "x.json")
    assert code == 2 and err.count("\n") == 1 and "pip install nltk" in err


@pytest.mark.usefixtures("offline_cache")
def test_score_synonyms_writes_the_released_format(tmp_path, capsys, tiny_clip_file):
    root = panoptic_root(tmp_path / "data", images=3)
    out = tmp_path / "scores.json"
    code, stdout, err = run_cli(capsys, "gkc", "score-synonyms", "-o", out, "--data-root", root,
                                "--weights", tiny_clip_file, "--batch-size", "3", "--no-progress")  # fmt: skip
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["synonyms_sha256"] == synonyms_sha256()
    released = json.loads((root / "coco/annotations/panoptic_train2017.json").read_text())
    lists, names = load_synonyms(), coco133_class_names()
    ranks = {c["id"]: i for i, c in enumerate(released["categories"])}
    assert len(data["annotations"]) == 3
    for record, source in zip(data["annotations"], released["annotations"]):
        assert record["image_id"] == source["image_id"]
        assert [s["id"] for s in record["segments_info"]] == [
            s["id"] for s in source["segments_info"]
        ]
        for scored, segment in zip(record["segments_info"], source["segments_info"]):
            assert scored["ori_category_id"] == segment["category_id"]
            if segment["iscrowd"]:
                assert scored["syn_category"] == {}
                continue
            probs = scored["syn_category"]
            assert list(probs) == lists[names[ranks[segment["category_id"]]]]
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    scores = read_synonym_scores(out, expected_sha256=synonyms_sha256())
    assert len(scores.images) == 3
    assert "3 images" in stdout


def test_caption_nouns_writes_the_nouns_of_each_caption(tmp_path, capsys, monkeypatch):
    from vocaseg.data import caption_nouns as nouns_module
    from vocaseg.data.synthetic import make_coco_captions

    root = panoptic_root(tmp_path / "data", images=3)
    captions = make_coco_captions(root, "train")
    tagger = lambda text: [(w, "NN" if w in {"sky", "grass"} else "DT") for w in text.split()]
    monkeypatch.setattr(nouns_module, "nltk_tagger", lambda: tagger)
    out = tmp_path / "nouns.json"
    code, stdout, err = run_cli(capsys, "gkc", "caption-nouns", captions, "-o", out)
    assert code == 0, err
    nouns = nouns_module.read_caption_nouns(out)
    assert len(nouns.images) == 3 and "3 images, 6 captions" in stdout


def test_caption_nouns_without_nltk_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nltk", None)
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": [], "annotations": []}))
    code, _, err = run_cli(capsys, "gkc", "caption-nouns", captions, "-o", tmp_path / "n.json")
    assert code == 2 and err.count("\n") == 1 and "pip install nltk" in err
