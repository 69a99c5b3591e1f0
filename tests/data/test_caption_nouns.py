"""Caption nouns for GKC grounding: extraction from the COCO captions format with a fake tagger,
the nouns file round trip and one-line errors, and the per-iteration word draw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vocaseg.data.caption_nouns import (
    extract_caption_nouns,
    read_caption_nouns,
    sample_caption_words,
    write_caption_nouns,
)
from vocaseg.data.synthetic import make_coco_captions, make_coco_panoptic_dataset
from vocaseg.errors import ConfigError, DatasetError
from vocaseg.hashing import file_sha256

NOUNS = {"dog", "sky", "grass", "person", "car", "bottle", "photo"}


def fake_tagger(text: str) -> list[tuple[str, str]]:
    """Splits on spaces and commas; words of NOUNS are NN, the rest DT."""
    words = text.replace(",", " , ").split()
    return [(w, "NN" if w in NOUNS else "DT") for w in words]


def captions_file(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1}, {"id": 2}, {"id": 3}],
                "annotations": [
                    {"image_id": 2, "id": 7, "caption": "a dog on the grass"},
                    {"image_id": 1, "id": 5, "caption": "a car under the sky"},
                    {"image_id": 2, "id": 6, "caption": "a person and a dog"},
                ],
            }
        )
    )
    return path


def test_nouns_of_each_caption_round_trip(tmp_path):
    source = captions_file(tmp_path)
    record = extract_caption_nouns(source, fake_tagger)
    write_caption_nouns(tmp_path / "nouns.json", record)
    nouns = read_caption_nouns(tmp_path / "nouns.json")
    assert nouns.captions(2) == [["person", "dog"], ["dog", "grass"]]  # caption id order
    assert nouns.captions(1) == [["car", "sky"]] and nouns.captions(3) == []
    assert nouns.captions_sha256 == file_sha256(source)
    assert nouns.sha256 == file_sha256(tmp_path / "nouns.json")


def test_generated_captions_name_each_images_classes(tmp_path):
    make_coco_panoptic_dataset(tmp_path, 3, size=48, seed=0, image_ext=".png")
    path = make_coco_captions(tmp_path, "train")
    data = json.loads(path.read_text())
    assert {a["image_id"] for a in data["annotations"]} == {1, 2, 3}
    nouns = extract_caption_nouns(path, fake_tagger)["images"]
    assert all(len(lists) == 2 and lists[0] for lists in nouns.values())


def test_a_missing_or_foreign_nouns_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="caption-nouns") as missing:
        read_caption_nouns(tmp_path / "absent.json")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"images": {}}))
    with pytest.raises(DatasetError, match="not a caption nouns file") as wrong:
        read_caption_nouns(foreign)
    assert "\n" not in str(missing.value) and "\n" not in str(wrong.value)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"annotations": [{"id": 1}]}))
    with pytest.raises(DatasetError, match="not a COCO captions file"):
        extract_caption_nouns(bad, fake_tagger)


def test_word_draw_drops_a_quarter_keeps_at_most_five_and_repeats_with_the_seed():
    caption = [f"w{i}" for i in range(4)]
    rng = np.random.default_rng(0)
    counts = [len(sample_caption_words([caption], rng)) for _ in range(4000)]
    # each of 4 nouns kept with p = 0.75, all kept when every one would drop
    assert abs(np.mean(counts) - (3.0 + 0.25**4)) < 0.05
    long = [f"w{i}" for i in range(20)]
    draws = [sample_caption_words([long], np.random.default_rng(s)) for s in range(50)]
    assert max(map(len, draws)) == 5 and min(map(len, draws)) == 5
    assert all(d == sorted(d, key=long.index) for d in draws)  # caption order
    assert draws[3] == sample_caption_words([long], np.random.default_rng(3))
    assert sample_caption_words([], rng) == [] and sample_caption_words([[]], rng) == []
    picked = {tuple(sample_caption_words([["a"], ["b"]], rng)) for _ in range(50)}
    assert picked == {("a",), ("b",)}
