"""The gkc_panoptic training pipeline on generated COCO panoptic data: sample contents, the
per-iteration vocabulary and its consistency with the labels, thresholded synonym scores, the
generated-data option and one-line errors for bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from gkc_helpers import panoptic_root, tiny_gkc, train_config
from vocaseg.data.gkc_pipeline import generate_gkc_data
from vocaseg.data.pipelines import PipelineContext, get_pipeline
from vocaseg.data.synonyms import (
    coco133_class_names,
    load_synonyms,
    synonyms_sha256,
    write_synonym_scores,
    write_synonyms,
)
from vocaseg.errors import ConfigError, DatasetError, VocabularyError

NAMES = coco133_class_names()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return panoptic_root(tmp_path_factory.mktemp("panoptic"), images=4)


def build(root, tmp_path, model=None, **sections):
    cfg = train_config(root, tmp_path / "run", **sections)
    model = model if model is not None else tiny_gkc()
    return get_pipeline("gkc_panoptic").build(cfg, model, PipelineContext())


def test_samples_hold_targets_teacher_crops_and_a_consistent_vocabulary(root, tmp_path):
    data = build(root, tmp_path)
    lists = load_synonyms()
    assert data.spec.vocabulary.class_names == NAMES
    assert data.spec.vocabulary.classes[0] == tuple(lists["person"])  # every drawable name
    assert data.record["synonyms_sha256"] == synonyms_sha256()
    for index in range(len(data.source)):
        sample = data.source.sample(index, np.random.default_rng(index))
        n = len(sample["labels"])
        assert sample["image"].shape == (3, 64, 64) and sample["masks"].shape == (n, 64, 64)
        assert sample["teacher_crops"].shape == (n, 3, 32, 32)
        vocabulary, syn = sample["vocabulary"], sample["syn_labels"].tolist()
        assert len(vocabulary) >= 133 and len(syn) == n
        for label, column in zip(sample["labels"].tolist(), syn):
            assert vocabulary[column] in lists[NAMES[label]]  # a name of the segment's class
            assert column == label or column >= 133  # its own column, or an appended one
        for c in range(133):  # untouched columns keep the class name
            assert vocabulary[c] == NAMES[c] or c in sample["labels"].tolist()


def test_sampling_is_reproducible_from_the_rng(root, tmp_path):
    data = build(root, tmp_path)
    a = data.source.sample(1, np.random.default_rng(7))
    b = data.source.sample(1, np.random.default_rng(7))
    assert torch.equal(a["image"], b["image"]) and a["vocabulary"] == b["vocabulary"]
    batch = data.collate([a, b])
    assert batch["image"].shape == (2, 3, 64, 64) and isinstance(batch["masks"], list)


def test_without_synonyms_the_vocabulary_is_the_class_names(root, tmp_path):
    data = build(root, tmp_path, options={"synonyms": "none"})
    sample = data.source.sample(0, np.random.default_rng(0))
    assert sample["vocabulary"] == NAMES
    assert torch.equal(sample["syn_labels"], sample["labels"])
    assert data.spec.vocabulary.classes[0] == ("person",)


def test_scores_restrict_the_draw_to_synonyms_above_the_threshold(root, tmp_path):
    synonyms = load_synonyms()
    annotations = json.loads((root / "coco/annotations/panoptic_train2017.json").read_text())
    records = []
    for record in annotations["annotations"]:
        segments = []
        for segment in record["segments_info"]:
            name = NAMES[sorted(_ids()).index(segment["category_id"])]
            options = synonyms[name]
            chosen = options[-1]  # the only synonym above the threshold
            scores = {w: (0.9 if w == chosen else 0.05) for w in options}
            segments.append({"id": segment["id"], "ori_category_id": segment["category_id"],
                             "syn_category": scores})  # fmt: skip
        records.append({**record, "segments_info": segments})
    path = tmp_path / "scores.json"
    write_synonym_scores(path, records, synonyms_sha256())
    data = build(root, tmp_path, options={"scores": str(path), "td_threshold": 0.1})
    for index in range(len(data.source)):
        sample = data.source.sample(index, np.random.default_rng(index))
        for label, column in zip(sample["labels"].tolist(), sample["syn_labels"].tolist()):
            assert sample["vocabulary"][column] == synonyms[NAMES[label]][-1]
    write_synonym_scores(path, records, "0" * 64)
    with pytest.raises(VocabularyError, match="scored with synonym list 000000000000"):
        build(root, tmp_path, options={"scores": str(path)})


def _ids() -> list[int]:
    from vocaseg.data.classlists import load_ids

    return load_ids("coco_panoptic.ids")


def test_a_synonym_file_naming_unknown_classes_is_one_line(root, tmp_path):
    path = tmp_path / "lists.json"
    write_synonyms(path, {"persn": ["persn", "man"]})
    with pytest.raises(VocabularyError, match=r"1 unknown class\(es\): 'persn'") as err:
        build(root, tmp_path, options={"synonyms": str(path)})
    assert "\n" not in str(err.value)


def test_images_without_segments_are_left_out_with_one_warning(tmp_path):
    root = panoptic_root(tmp_path / "data", images=3)
    path = root / "coco/annotations/panoptic_train2017.json"
    annotations = json.loads(path.read_text())
    annotations["annotations"][0]["segments_info"] = []
    for segment in annotations["annotations"][1]["segments_info"]:
        segment["iscrowd"] = 1
    path.write_text(json.dumps(annotations))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build(root, tmp_path)
    assert len(data.source) == 1
    assert any("2 image(s) without any non-crowd segment" in str(w.message) for w in caught)
    annotations["annotations"][2]["segments_info"] = []
    path.write_text(json.dumps(annotations))
    with pytest.raises(DatasetError, match="no image has a non-crowd segment"):
        build(root, tmp_path)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"options": {"crops": 64}}, "crops"),
        ({"data": {"transform": {"crop_size": 64}}}, "takes its augmentation in data.options"),
        ({"data": {"dataset": "ade150"}}, "reads COCO panoptic"),
        ({"options": {"teacher_size": None}}, "needs teacher crops"),
        ({"options": {"synonyms": "none", "scores": "s.json"}}, "needs synonym lists"),
        ({"options": {"synthetic": {"train": 2, "test": 1}}}, "unknown keys"),
    ],
)
def test_bad_options_are_one_line_errors(root, tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        build(root, tmp_path, **sections)


def test_the_synthetic_option_writes_the_data_once(tmp_path):
    root = tmp_path / "generated"
    cfg = train_config(root, tmp_path / "run", options={"synthetic": {"train": 3, "val": 2}})
    generate_gkc_data(cfg, PipelineContext())
    stamp = (root / "coco/annotations/panoptic_train2017.json").stat().st_mtime_ns
    generate_gkc_data(cfg, PipelineContext())  # already there: untouched
    assert (root / "coco/annotations/panoptic_train2017.json").stat().st_mtime_ns == stamp
    data = get_pipeline("gkc_panoptic").build(cfg, tiny_gkc(), PipelineContext())
    assert len(data.source) == 3
    assert len(list((root / "coco/panoptic_val2017").glob("*.png"))) == 2


# ----- caption grounding --------------------------------------------------------------------


def test_captions_give_each_sample_drawn_nouns_and_are_recorded(root, tmp_path):
    from gkc_helpers import caption_nouns_file

    nouns = caption_nouns_file(root)
    data = build(root, tmp_path, options={"captions": str(nouns)})
    assert "caption_words" in data.list_keys
    assert data.record["captions"] == str(nouns) and len(data.record["captions_sha256"]) == 64
    first = [data.source.sample(i, np.random.default_rng(7)) for i in range(4)]
    again = [data.source.sample(i, np.random.default_rng(7)) for i in range(4)]
    assert [s["caption_words"] for s in first] == [s["caption_words"] for s in again]
    for sample in first:
        assert 1 <= len(sample["caption_words"]) <= 5
        assert all(any(w in name.split() for name in NAMES) for w in sample["caption_words"])
    batch = data.collate(first[:2])
    assert isinstance(batch["caption_words"], list) and len(batch["caption_words"]) == 2


def test_without_captions_samples_are_unchanged(root, tmp_path):
    from gkc_helpers import caption_nouns_file

    plain = build(root, tmp_path).source.sample(0, np.random.default_rng(3))
    nouns = caption_nouns_file(root)
    off = build(root, tmp_path, options={"captions": str(nouns)}).source
    captioned = off.sample(0, np.random.default_rng(3))
    assert "caption_words" not in plain
    assert torch.equal(plain["image"], captioned["image"])
    assert plain["vocabulary"] == captioned["vocabulary"]


def test_images_without_captions_are_counted_in_one_warning(tmp_path):
    from gkc_helpers import caption_nouns_file

    data_root = panoptic_root(tmp_path / "data", images=3)
    nouns = caption_nouns_file(data_root)
    record = json.loads(nouns.read_text())
    del record["images"]["2"]
    nouns.write_text(json.dumps(record))
    with pytest.warns(Warning, match="1 of 3 image") as caught:
        data = build(data_root, tmp_path, options={"captions": str(nouns)})
    assert len(caught) == 1 and data.record["images_without_captions"] == 1
    samples = [data.source.sample(i, np.random.default_rng(0)) for i in range(3)]
    assert sorted(len(s["caption_words"]) == 0 for s in samples) == [False, False, True]


def test_caption_setting_errors_are_one_line(root, tmp_path):
    from gkc_helpers import caption_nouns_file

    with pytest.raises(ConfigError, match="caption-nouns") as missing:
        build(root, tmp_path, options={"captions": str(tmp_path / "absent.json")})
    foreign = tmp_path / "foreign.json"
    foreign.write_text("{}")
    with pytest.raises(DatasetError, match="not a caption nouns file"):
        build(root, tmp_path, options={"captions": str(foreign)})
    with pytest.raises(ConfigError, match="grounding: on needs captions"):
        build(root, tmp_path, model=tiny_gkc(grounding="on"))
    with pytest.raises(ConfigError, match="grounding is off"):
        build(
            root,
            tmp_path,
            model=tiny_gkc(grounding=False),
            options={"captions": str(caption_nouns_file(root))},
        )
    assert "\n" not in str(missing.value)
