"""The per-(method, benchmark) protocol table shipped in ``vocaseg/data/protocols/*.yaml``.

Structure: every row resolves (``defaults`` + row) to exactly the protocol keys, each with a
source; every class list, background list and template set it names exists and fits the
dataset. Values: a few rows per method against numbers copied from the official configs (the
file each number comes from is named next to it).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from vocaseg.background import PROTOCOLS
from vocaseg.data.classlists import available_lists, load_ids
from vocaseg.data.layouts import SPECS
from vocaseg.text.templates import TEMPLATE_SETS

METHODS = (
    "maskclip", "maskclip-ref", "sclip", "clearclip", "naclip", "zegclip", "tagclip", "gkc",
    "zeroseg",
)  # fmt: skip
KEYS = (
    "short_side", "max_long_side", "window", "stride", "pad", "size_divisor", "logit_scale",
    "prob_thd", "area_thd", "background", "background_names", "class_list", "templates",
    "pamr_steps", "seen", "protocol",
)  # fmt: skip
PADS = ("center", "bottom_right", "none")
FAMILIES = ("ov-cross", "training-free", "zs-split", "ov-video")


def _folder():
    return resources.files("vocaseg.data") / "protocols"


@cache
def _table(method: str) -> dict[str, Any]:
    return yaml.safe_load((_folder() / f"{method}.yaml").read_text(encoding="utf-8"))


def _rows(method: str) -> list[str]:
    return [key for key in _table(method) if key != "defaults"]


def resolve(method: str, row: str) -> dict[str, Any]:
    """``defaults`` overlaid with the row; ``sources`` merged key by key."""
    table = _table(method)
    defaults, values = table.get("defaults", {}), table[row]
    merged = {**defaults, **values}
    merged["sources"] = {**defaults.get("sources", {}), **values.get("sources", {})}
    return merged


def _class_lines(list_id: str) -> list[str]:
    # lines, not a Vocabulary: coco_object.sclip names "bed" twice, as SCLIP ships it
    file_name = list_id if "." in list_id else f"{list_id}.txt"  # classlists' id rule
    path = resources.files("vocaseg.data") / "classes" / file_name
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


ALL_ROWS = [(m, r) for m in METHODS for r in _rows(m)]


def test_one_file_per_method_preset():
    files = {p.name for p in _folder().iterdir() if p.name.endswith(".yaml")}
    assert files == {f"{m}.yaml" for m in METHODS}


@pytest.mark.parametrize(("method", "row"), ALL_ROWS)
def test_rows_resolve_to_the_protocol_keys_with_sources(method, row):
    resolved = resolve(method, row)
    assert set(resolved) == {*KEYS, "target", "sources"}, set(resolved) ^ {*KEYS, "target"}
    missing = [k for k in KEYS if not resolved["sources"].get(k)]
    assert not missing, f"{method}/{row}: no source for {missing}"
    assert resolved["target"].get("from"), f"{method}/{row}: target names no origin"


@pytest.mark.parametrize(("method", "row"), ALL_ROWS)
def test_values_are_in_their_domains(method, row):
    r = resolve(method, row)
    dataset, _, trained_on = row.partition("@")
    assert dataset in SPECS and (not trained_on or trained_on in SPECS)
    assert r["pad"] in PADS and r["background"] in PROTOCOLS and r["protocol"] in FAMILIES
    assert r["templates"] in TEMPLATE_SETS
    assert (r["window"] is None) == (r["stride"] is None)
    assert (r["pad"] == "none") == (r["size_divisor"] is None)
    assert isinstance(r["pamr_steps"], int) and r["pamr_steps"] >= 0
    if r["background"] in ("bg:threshold", "bg:groupvit"):
        assert 0 < r["prob_thd"] < 1
    else:
        assert r["prob_thd"] is None and r["area_thd"] is None
    assert r["seen"] in ("dataset", None)
    if r["seen"] == "dataset":
        assert f"{dataset}.unseen" in available_lists()
        assert r["protocol"] in ("zs-split", "ov-video")
    if trained_on:  # a model trained elsewhere never gets the target's split
        assert r["seen"] is None and r["protocol"] == "ov-cross"


@pytest.mark.parametrize(("method", "row"), ALL_ROWS)
def test_class_lists_fit_the_dataset(method, row):
    r = resolve(method, row)
    spec = SPECS[row.partition("@")[0]]
    assert r["class_list"] in available_lists()
    classes = _class_lines(r["class_list"])
    expected = spec.num_classes - 1 if r["background"] == "bg:groupvit" else spec.num_classes
    if r["background"] == "bg:groupvit":  # GroupViT lists carry "background" first, unused
        classes = classes[1:]
    assert len(classes) == expected, (method, row, r["class_list"])
    if r["background_names"] is not None:
        names = _class_lines(r["background_names"])
        assert all(";" not in n for n in names)  # one synonym per line (bg:threshold,names=)
        assert classes[0].split("; ") == names  # the list's class 0 is the same background


def test_cross_dataset_rows_exist_for_the_zero_shot_methods():
    for method in ("zegclip", "tagclip"):
        rows = _rows(method)
        assert {"voc20@coco_stuff", "pc60@coco_stuff", "pc59@coco_stuff"} <= set(rows)
        assert {"voc20", "coco_stuff"} <= set(rows)


# --- values against the official configs ---------------------------------------------------


def test_sclip_rows():
    voc21 = resolve("sclip", "voc21")
    # wangf3014/SCLIP configs/cfg_voc21.py: logit_scale=65, prob_thd=0.1, area_thd=0.1,
    # Resize scale=(2048, 336)
    assert (voc21["logit_scale"], voc21["prob_thd"], voc21["area_thd"]) == (65, 0.1, 0.1)
    assert (voc21["short_side"], voc21["max_long_side"]) == (336, 2048)
    # wangf3014/SCLIP clip_segmentor.py: slide_crop=224, slide_stride=112, logit_scale=40
    assert (voc21["window"], voc21["stride"]) == (224, 112)
    assert voc21["class_list"] == "voc21.sclip" and voc21["templates"] == "imagenet80"
    # configs/cfg_context60.py and cfg_coco_object.py: logit_scale=50, prob_thd=0.1
    for row in ("pc60", "coco_object"):
        r = resolve("sclip", row)
        assert (r["logit_scale"], r["prob_thd"], r["area_thd"]) == (50, 0.1, None)
    assert resolve("sclip", "pc59")["logit_scale"] == 40
    # configs/cfg_coco_stuff164k.py scale=(2048, 448); cfg_city_scapes.py scale=(2048, 560)
    assert resolve("sclip", "coco_stuff")["short_side"] == 448
    assert resolve("sclip", "cityscapes")["short_side"] == 560
    assert resolve("sclip", "voc21")["target"]["mIoU"] == 59.63  # README.md


def test_maskclip_rows_use_sclips_protocol():
    for row in _rows("sclip"):
        a, b = resolve("sclip", row), resolve("maskclip", row)
        assert {k: a[k] for k in KEYS} == {k: b[k] for k in KEYS}


def test_clearclip_rows():
    # mc-lan/ClearCLIP configs/cfg_voc21.py prob_thd=0.5, cfg_context60.py 0.15,
    # cfg_coco_object.py 0.4; every stored config Resize scale=(2048, 448)
    prob = {row: resolve("clearclip", row)["prob_thd"] for row in ("voc21", "pc60", "coco_object")}
    assert prob == {"voc21": 0.5, "pc60": 0.15, "coco_object": 0.4}
    assert {resolve("clearclip", r)["short_side"] for r in _rows("clearclip")} == {448}
    # clearclip_segmentor.py: slide_crop=448, slide_stride=224, logit_scale=50;
    # configs/cfg_city_scapes.py: slide_crop=224 (stride stays 224)
    voc20, city = resolve("clearclip", "voc20"), resolve("clearclip", "cityscapes")
    assert (voc20["window"], voc20["stride"], voc20["logit_scale"]) == (448, 224, 50)
    assert (city["window"], city["stride"]) == (224, 224)
    assert voc20["pad"] == "center" and voc20["size_divisor"] == 16  # compute_padsize
    assert resolve("clearclip", "voc21")["class_list"] == "voc21.clearclip"  # cls_voc21.txt


def test_naclip_rows():
    # sinahmr/NACLIP naclip.py: pamr_steps=10, logit_scale=40, slide 224/112
    for row in _rows("naclip"):
        assert resolve("naclip", row)["pamr_steps"] == 10
    pc59 = resolve("naclip", "pc59")
    assert (pc59["logit_scale"], pc59["window"], pc59["stride"]) == (40, 224, 112)
    # configs/cfg_voc21.py prob_thd=0.1 (no logit-scale override); VOC rows whole image
    voc21 = resolve("naclip", "voc21")
    assert (voc21["prob_thd"], voc21["logit_scale"], voc21["window"]) == (0.1, 40, None)
    assert resolve("naclip", "voc20")["window"] is None
    # configs/cfg_city_scapes.py scale=(2048, 560); cfg_coco_stuff164k.py (2048, 448)
    assert resolve("naclip", "cityscapes")["short_side"] == 560
    assert resolve("naclip", "coco_stuff")["short_side"] == 448
    assert resolve("naclip", "voc21")["target"]["mIoU"] == 64.07  # README.md


def test_maskclip_ref_rows():
    # MaskCLIP configs: whole image (maskclip_vit16.py test_cfg mode='whole');
    # pascal_voc12_aug_20.py img_scale=(2048, 512); pascal_context_59.py img_scale=(520, 520)
    voc20, pc59 = resolve("maskclip-ref", "voc20"), resolve("maskclip-ref", "pc59")
    assert (voc20["short_side"], voc20["max_long_side"], voc20["window"]) == (512, 2048, None)
    assert (pc59["short_side"], pc59["max_long_side"]) == (520, 520)
    assert voc20["pad"] == "bottom_right"  # PatchEmbed(padding='corner')
    assert voc20["templates"] == "maskclip85" and voc20["class_list"] == "voc20.maskclip"
    # configs/maskclip/README.md, ViT-B/16: 49.5 / 21.7 / 12.5
    targets = {r: resolve("maskclip-ref", r)["target"]["mIoU"] for r in _rows("maskclip-ref")}
    assert targets == {"voc20": 49.5, "pc59": 21.7, "coco_stuff": 12.5}


@pytest.mark.parametrize("method", ["zegclip", "tagclip"])
def test_zero_shot_rows(method):
    # ZiqinZhou66/ZegCLIP configs/_base_/datasets/voc12_20_512x512.py: img_scale=(2048, 512),
    # min_size=512 (no long-side cap); test_cfg slide crop (512, 512) stride (426, 426)
    voc20 = resolve(method, "voc20")
    assert (voc20["short_side"], voc20["max_long_side"]) == (512, None)
    assert (voc20["window"], voc20["stride"]) == (512, 426)
    # voc12_single.npy ("a photo of a {}") for VOC, coco_multi.npy (15 templates) for COCO
    assert voc20["templates"] == "voc_single" and voc20["seen"] == "dataset"
    assert resolve(method, "coco_stuff")["templates"] == "coco15"
    # configs/cross_dataset/coco-to-voc.py: novel_class = [], voc12_single.npy
    cross = resolve(method, "voc20@coco_stuff")
    assert cross["seen"] is None and cross["templates"] == "voc_single"
    # configs/cross_dataset/coco-to-context.py: 60 classes, context_multi.npy
    context = resolve(method, "pc60@coco_stuff")
    assert context["class_list"] == "pc60" and context["templates"] == "coco15"
    assert len(load_ids("voc20.unseen")) == 5  # novel_class = [15, 16, 17, 18, 19]


def test_zegclip_targets():
    # ZiqinZhou66/ZegCLIP README.md pretrained-models table
    target = resolve("zegclip", "coco_stuff")["target"]
    assert target["inductive"] == {
        "pAcc": 62.0,
        "mIoU_seen": 40.2,
        "mIoU_unseen": 41.1,
        "hIoU": 40.8,
    }
    assert resolve("zegclip", "voc20")["target"]["transductive"]["hIoU"] == 91.1


def test_gkc_rows():
    # detectron2 test resize 800 / 1333 (not overridden in OpenTrans Base-COCO config);
    # SIZE_DIVISIBILITY 32 (GKC maskformer2_R50_..._dense.yaml); VIPSeg MIN_SIZE_TEST 360
    coco = resolve("gkc", "coco_panoptic")
    assert (coco["short_side"], coco["max_long_side"], coco["size_divisor"]) == (800, 1333, 32)
    assert coco["pad"] == "bottom_right" and coco["templates"] == "identity"
    assert resolve("gkc", "vipseg")["short_side"] == 360
    # GKC register_pascal_context.py PC_FULL_CATEGORIES: "fire place", "water skate board"
    assert resolve("gkc", "pc459")["class_list"] == "pc459.san"


def test_zeroseg_rows():
    # NVlabs/GroupViT segmentation/configs/_base_/datasets/*.py: img_scale=(2048, 448),
    # slide crop (448, 448) stride (224, 224); ZeroSeg thresholds VOC .95, Context .05, COCO .35
    thresholds = {r: resolve("zeroseg", r)["prob_thd"] for r in _rows("zeroseg")}
    assert thresholds == {"voc21": 0.95, "pc60": 0.05, "coco_object": 0.35}
    voc = resolve("zeroseg", "voc21")
    assert (voc["short_side"], voc["window"], voc["stride"]) == (448, 448, 224)
    assert voc["class_list"] == "voc21.groupvit" and voc["background"] == "bg:groupvit"


def test_the_docs_page_lists_every_row():
    page = (Path(__file__).resolve().parents[2] / "docs" / "protocols.md").read_text()
    rows_part = page.split("\n## Rows\n", 1)[1].split("\n## ", 1)[0]
    sections = rows_part.split("\n### `")[1:]
    listed = {s.split("`", 1)[0]: re.findall(r"^\| `([^`]+)` \|", s, re.M) for s in sections}
    assert listed == {m: _rows(m) for m in METHODS}
