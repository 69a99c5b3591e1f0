"""Shipped class lists, splits and id tables: counts, anchors and cross-list consistency."""

from __future__ import annotations

from importlib import resources

import pytest

from vocaseg.data.classlists import (
    available_lists,
    class_list_sha256,
    load_class_list,
    load_ids,
    seen_ids,
)
from vocaseg.errors import DatasetError

COUNTS = {
    "voc20": 20, "voc21": 21, "voc20b": 21, "voc20.san": 20, "voc21.groupvit": 21,
    "voc21.sclip": 21, "voc20b.catseg": 59, "pc59": 59, "pc60": 60, "pc459": 459,
    "pc459.labels": 459, "coco_stuff": 171, "coco_object": 81, "coco_panoptic": 133,
    "ade150": 150, "ade847": 847, "cityscapes": 19, "vspw": 124, "vipseg": 124,
    "voc20.sclip": 20, "pc60.sclip": 60, "pc59.sclip": 59, "coco_stuff.sclip": 171,
    "cityscapes.sclip": 19, "ade150.sclip": 150, "voc21.clearclip": 21, "voc20.maskclip": 20,
    "pc59.maskclip": 59, "coco_stuff.maskclip": 171, "pc59.catseg": 59, "pc459.san": 459,
    "pc60.groupvit": 60, "voc20b.catseg_extra": 39, "sclip.background": 26,
}  # fmt: skip
# Lists in which one name stands for two classes, as upstream ships them (see docs/protocols.md):
# ``Vocabulary`` rejects them until a rule for shared synonyms exists, so only lines are counted.
SHARED_NAME_LISTS = {"coco_object.sclip": 81, "ade847.synonyms": 847}


def _raw_lines(list_id: str) -> list[str]:
    folder = resources.files("vocaseg.data") / "classes"
    return [line for line in (folder / list_id).read_text(encoding="utf-8").splitlines() if line]


@pytest.mark.parametrize(("list_id", "count"), COUNTS.items())
def test_class_list_counts(list_id, count):
    assert len(load_class_list(list_id)) == count


@pytest.mark.parametrize(("list_id", "count"), SHARED_NAME_LISTS.items())
def test_shared_name_list_line_counts(list_id, count):
    assert len(_raw_lines(list_id)) == count


def test_every_shipped_file_is_known_here():
    tables = {"coco_stuff.ids", "coco_panoptic.ids", "pc60.ids", "ade847.ids"}
    splits = {"voc20.unseen", "coco_stuff.unseen", "pc59.unseen", "vipseg.unseen"}
    synonyms = {"coco133_synonyms.json"}  # GKC's synonym lists (vocaseg.data.synonyms)
    known = set(COUNTS) | set(SHARED_NAME_LISTS) | tables | splits | synonyms
    assert set(available_lists()) == known


def test_pascal_lists_agree():
    voc = load_class_list("voc20").class_names
    assert load_class_list("voc21").class_names == ["background", *voc]
    assert load_class_list("voc20b").class_names == [*voc, "background"]
    assert load_class_list("voc20.san").class_names[19] == "tv"
    assert load_class_list("voc21.groupvit").class_names[11] == "table"
    pc59 = load_class_list("pc59").class_names
    assert pc59 == sorted(pc59) and pc59[49] == "table"  # diningtable sorts as "table"
    assert load_class_list("voc20b.catseg").class_names[20:] == [
        n for n in pc59 if n not in {*voc, "table"}
    ]


def test_pc459_names_and_the_pc60_id_table():
    spaced = load_class_list("pc459").class_names
    concatenated = load_class_list("pc459.labels").class_names
    assert [n.replace(" ", "") for n in spaced] == concatenated
    assert spaced[2] == "air conditioner" and "unknown" in spaced
    ids = load_ids("pc60.ids")
    assert len(ids) == 60 and ids == sorted(ids) and ids[0] == 0
    # the 59 ids point at the PC-59 names in the 1-based 459 space
    assert [concatenated[i - 1] for i in ids[1:]] == load_class_list("pc59").class_names


def test_coco_tables():
    stuff_ids = load_ids("coco_stuff.ids")
    dropped = sorted(set(range(182)) - set(stuff_ids))
    assert dropped == [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]
    stuff = load_class_list("coco_stuff").class_names
    assert stuff[0] == "person" and stuff[80] == "banner" and stuff[170] == "wood"
    assert load_class_list("coco_object").class_names[1:] == stuff[:80]
    panoptic_ids = load_ids("coco_panoptic.ids")
    assert len(panoptic_ids) == 133 and panoptic_ids == sorted(panoptic_ids)
    assert panoptic_ids[79] == 90 and panoptic_ids[80] == 92 and panoptic_ids[-1] == 200
    panoptic = load_class_list("coco_panoptic").class_names
    assert panoptic[:80] == stuff[:80] and panoptic[-1] == "rug-merged"


def test_zero_shot_splits_name_the_spec_classes():
    voc = load_class_list("voc20").class_names
    assert [voc[i] for i in load_ids("voc20.unseen")] == [
        "pottedplant", "sheep", "sofa", "train", "tvmonitor"
    ]  # fmt: skip
    stuff = load_class_list("coco_stuff").class_names
    assert [stuff[i] for i in load_ids("coco_stuff.unseen")] == [
        "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
        "cardboard", "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete",
    ]  # fmt: skip
    pc59 = load_class_list("pc59").class_names
    assert [pc59[i] for i in load_ids("pc59.unseen")] == [
        "aeroplane", "bed", "bedclothes", "boat", "bottle", "car", "cloth", "cow", "keyboard",
        "plate",
    ]  # fmt: skip
    vipseg = load_class_list("vipseg").class_names
    assert [vipseg[i] for i in load_ids("vipseg.unseen")] == [
        "pillar", "ice", "grandstand", "tyre", "box", "basket", "trash can", "bathtub", "fan",
        "blackboard", "printer", "instrument",
    ]  # fmt: skip
    assert len(seen_ids("coco_stuff", 171)) == 156 and seen_ids("ade150", 150) is None


def test_background_word_lists():
    # one synonym per line, as bg:threshold,names=FILE reads it
    words = tuple(load_class_list("sclip.background").class_names)
    assert len(words) == 26 and words[:3] == ("sky", "wall", "tree")
    sclip = load_class_list("voc21.sclip")
    assert sclip.classes[0] == words and len(sclip.classes[15]) == 7


def test_ade_lists():
    ade150 = load_class_list("ade150").class_names
    assert ade150[7] == "bed" and ade150[-1] == "flag"  # MMSeg's "bed " trimmed
    ade847 = load_class_list("ade847").class_names
    assert ade847[1] == "building, edifice"  # the WordNet comma list is one name
    assert len(set(load_ids("ade847.ids"))) == 847


def test_vspw_synonyms():
    vspw = load_class_list("vspw")
    assert vspw.classes[7] == ("handrail", "fence")
    assert vspw.class_names == load_class_list("vipseg").class_names


def test_sha_and_unknown_list():
    assert class_list_sha256("voc21") != class_list_sha256("voc21.groupvit")
    with pytest.raises(DatasetError, match="no class list 'nope'; known lists: ade150"):
        load_class_list("nope")


def test_bom_comments_and_blank_lines_in_list_files(tmp_path, monkeypatch):
    from vocaseg.data import classlists

    (tmp_path / "mine.txt").write_bytes("\ufeffcat\n\n  # a comment\nsofa; couch  \n".encode())
    (tmp_path / "mine.ids").write_bytes("\ufeff3\n# ids\n7\n".encode())
    monkeypatch.setattr(classlists, "_folder", lambda: tmp_path)
    classlists._read.cache_clear()
    try:
        assert load_class_list("mine").classes == (("cat",), ("sofa", "couch"))
        assert load_ids("mine.ids") == [3, 7]
    finally:
        classlists._read.cache_clear()
