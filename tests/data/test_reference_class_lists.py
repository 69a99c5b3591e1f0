"""Reference class-name variants (the names each official codebase feeds its text encoder).

Every expected value below was copied from the official file named in the comment; the
canonical lists are the anchor, so each test pins exactly where a variant departs from them.
"""

from __future__ import annotations

from collections import defaultdict
from importlib import resources

from vocaseg.background import make_protocol
from vocaseg.data.classlists import load_class_list, read_names


def _lines(list_id: str) -> list[str]:
    folder = resources.files("vocaseg.data") / "classes"
    return [line for line in (folder / list_id).read_text(encoding="utf-8").splitlines() if line]


def _names(list_id: str) -> list[str]:
    return load_class_list(list_id).class_names


def _differences(a: list[str], b: list[str]) -> dict[int, tuple[str, str]]:
    assert len(a) == len(b)
    return {i: (x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y}


def test_sclip_lists_follow_the_canonical_order():
    # wangf3014/SCLIP configs/cls_{context59,context60,coco_stuff,city_scapes,ade20k}.txt@57fa9aa
    # spell multi-word names without spaces ("trafficlight", "chestofdrawers") in canonical order
    for variant, canonical in [
        ("pc59.sclip", "pc59"), ("pc60.sclip", "pc60"), ("coco_stuff.sclip", "coco_stuff"),
        ("cityscapes.sclip", "cityscapes"), ("ade150.sclip", "ade150"),
    ]:  # fmt: skip
        squeezed = [n.replace(" ", "") for n in _names(canonical)]
        assert [n.replace(" ", "") for n in _names(variant)] == squeezed, variant
    assert _names("coco_stuff.sclip")[9] == "trafficlight"
    assert _names("ade150.sclip")[44] == "chestofdrawers"


def test_sclip_voc_lists():
    # wangf3014/SCLIP configs/cls_voc20.txt@57fa9aa: ship, table, 7 person names, 5 tv names
    voc20 = load_class_list("voc20.sclip")
    assert _differences(_names("voc20"), voc20.class_names) == {
        3: ("boat", "ship"), 10: ("diningtable", "table"), 19: ("tvmonitor", "television monitor"),
    }  # fmt: skip
    assert voc20.classes[14][-1] == "person in jacket" and len(voc20.classes[14]) == 7
    tv = ("television monitor", "tv monitor", "monitor", "television", "screen")
    assert voc20.classes[19] == tv
    assert load_class_list("voc21.sclip").classes[1:] == voc20.classes


def test_sclip_coco_object_keeps_bed_twice():
    # wangf3014/SCLIP configs/cls_coco_object.txt@57fa9aa: class 0 = the 26 stuff words (with
    # "bed"), class 1 = 7 person names + "body", class 60 = "bed"
    lines = _lines("coco_object.sclip")
    background = lines[0].split("; ")
    assert background == _names("sclip.background") and "bed" in background
    assert lines[1].split("; ")[-1] == "body" and len(lines[1].split("; ")) == 8
    assert lines[60] == "bed" and lines[2:] == _names("coco_object")[2:]


def test_clearclip_voc21():
    # mc-lan/ClearCLIP configs/cls_voc21.txt@fd05ce4: "background", no synonyms
    names = _names("voc21.clearclip")
    assert names[0] == "background" and names[4] == "ship" and names[11] == "table"
    assert all(len(c) == 1 for c in load_class_list("voc21.clearclip").classes)


def test_maskclip_renamings():
    # tools/maskclip_utils/prompt_engineering.py of MaskCLIP (1ucky40nc3/MaskCLIP@7043f0e)
    assert _differences(_names("voc20"), _names("voc20.maskclip")) == {
        0: ("aeroplane", "airplane"), 10: ("diningtable", "dining table"),
        15: ("pottedplant", "potted plant"), 19: ("tvmonitor", "tv monitor"),
    }  # fmt: skip
    assert _differences(_names("pc59"), _names("pc59.maskclip")) == {
        0: ("aeroplane", "airplane"), 39: ("pottedplant", "potted plant"),
        54: ("tvmonitor", "tv monitor"),
    }  # fmt: skip
    stuff = _differences(_names("coco_stuff"), _names("coco_stuff.maskclip"))
    assert len(stuff) == 29 and min(stuff) == 84  # only stuff classes are renamed
    assert stuff[84] == ("building-other", "building")
    assert stuff[91] == ("ceiling-tile", "tile ceiling")
    assert stuff[160] == ("wall-concrete", "concrete wall")
    assert stuff[169] == ("window-other", "window")


def test_detectron2_lineage_spellings():
    # cvlab-kaist/CAT-Seg datasets/pc59.json@dc295ee and MendelXu/SAN register_pcontext.py@c9fd1f2
    assert _differences(_names("pc59"), _names("pc59.catseg")) == {49: ("table", "diningtable")}
    assert _differences(_names("pc459"), _names("pc459.san")) == {
        147: ("fireplace", "fire place"), 447: ("water skateboard", "water skate board"),
    }  # fmt: skip


def test_catseg_voc20b_extra_names():
    # cvlab-kaist/CAT-Seg datasets/voc20b.json@dc295ee entries 20..58, in CAT-Seg's order
    extra = _names("voc20b.catseg_extra")
    assert len(extra) == 39 and extra[:3] == ["bag", "bed", "bench"]
    assert extra[21:24] == ["curtain", "platform", "sign"] and extra[31] == "bedclothes"
    assert extra[-1] == "wood"
    assert sorted(extra) == sorted(_names("voc20b.catseg")[20:])


def test_groupvit_context_names():
    # NVlabs/GroupViT segmentation/datasets/pascal_context.py@1757819
    names = _names("pc60.groupvit")
    assert names[0] == "background" and names[1] == "airplane" and names[40] == "plant"
    assert names[55] == "monitor"
    assert [n for n in names if n not in _names("pc60")] == ["airplane", "plant", "monitor"]


def test_ade847_synonyms_give_catseg_first_names():
    # CAT-Seg's get_text_embeds encodes classname.split(", ")[0] (cvlab-kaist/CAT-Seg
    # cat_seg/modeling/transformer/cat_seg_predictor.py); the names are CAT-Seg datasets/ade847.json
    canonical = _lines("ade847.txt")
    synonyms = [line.split("; ") for line in _lines("ade847.synonyms")]
    assert [s[0] for s in synonyms] == [c.split(", ")[0] for c in canonical]
    assert synonyms[1] == ["building", "edifice"] and synonyms[11][0] == "person"
    assert synonyms == [[name.strip() for name in c.split(", ")] for c in canonical]
    assert all("," not in name for s in synonyms for name in s)


def test_ade847_shared_synonyms():
    # the names that two or more ADE-847 classes share once the comma lists are split
    owners: dict[str, set[int]] = defaultdict(set)
    for index, line in enumerate(_lines("ade847.synonyms")):
        for name in line.split("; "):
            owners[name.lower()].add(index)
    shared = {name: sorted(ids) for name, ids in owners.items() if len(ids) > 1}
    assert len(shared) == 41
    assert shared["screen"] == [51, 57, 147, 153] and shared["bag"] == [114, 191, 252]
    assert shared["pot"] == [58, 130, 188] and shared["dog"] == [259, 796]


def _path(list_id: str) -> str:
    return str(resources.files("vocaseg.data") / "classes" / list_id)


def test_background_lists_feed_the_background_protocols():
    # background_names=sclip.background reads one synonym per line: class 0 becomes the 26 words
    threshold = make_protocol("bg:threshold", 0.1, names=read_names("sclip.background"))
    vocabulary = threshold.scored_vocabulary(load_class_list("voc21"))
    assert vocabulary.classes == load_class_list("voc21.sclip").classes[:1] + vocabulary.classes[1:]
    assert len(vocabulary.classes[0]) == 26 and vocabulary.class_names[1:] == _names("voc20")
    # bg:catseg-20b with CAT-Seg's 39 distractors: the 20 VOC classes then the extras, as voc20b.json
    extra = read_names("voc20b.catseg_extra")
    names = make_protocol("bg:catseg-20b", names=extra).scored_vocabulary(load_class_list("voc20b"))
    names = names.class_names
    assert len(names) == 59 and names[:20] == _names("voc20") and names[20] == "bag"
