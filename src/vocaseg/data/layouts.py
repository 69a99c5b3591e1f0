"""Benchmark table: classes, expected counts and on-disk layouts of every dataset id
(docs/datasets.md §2).

Each :class:`DatasetSpec` lists its layouts in probing order (MMSeg first, then the detectron2
repos: CAT-Seg, SAN, FC-CLIP/ODISE). A :class:`Layout` names folders relative to a dataset root;
``{split}`` is replaced by the layout's folder token for the requested split (``val`` ->
``validation`` on ADE, ``val2017`` on COCO) and, for videos, ``{video}`` by each video id.
Several layouts may share an id (the same convention found under two folder names); forcing
``layout=`` probes all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vocaseg.data.classlists import load_ids

ADE_SPLITS = {"val": "validation", "train": "training"}
COCO_SPLITS = {"val": "val2017", "train": "train2017"}


@dataclass(frozen=True)
class Layout:
    """Where one convention keeps images and labels, and how its label values decode."""

    id: str
    images: str
    labels: str
    decoder: str = "identity"
    label_suffix: str = ".png"
    image_suffix: str = ""  # between the pairing stem and the extension ("_leftImg8bit")
    split_files: tuple[str, ...] = ()  # candidates; lines are stems (or video ids)
    splits: Mapping[str, str] = field(default_factory=dict)  # split -> folder token
    disk_ignore: tuple[int, ...] = (255,)
    table: str | None = None  # name in TABLES, for the "lut" decoder
    exclude: tuple[str, ...] = ()  # label name endings that belong to other layouts
    recursive: bool = False  # images/labels sit in sub-folders (Cityscapes cities)
    panoptic_json: str | None = None

    def token(self, split: str) -> str:
        return self.splits.get(split, split)

    def fill(self, template: str, split: str, video: str = "") -> str:
        return template.format(split=self.token(split), video=video)


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark id: C, class list, expected counts per split, layouts in probing order."""

    id: str
    num_classes: int
    class_list: str
    layouts: tuple[Layout, ...]
    counts: Mapping[str, tuple[int, ...]]
    description: str
    video: bool = False


def _voc20b_table() -> list[int]:
    """VOC palette value -> voc20b trainId: 0 (background) -> 20, k -> k - 1, 255 stays."""
    table = [-1] * 256
    table[0] = 20
    for value in range(1, 21):
        table[value] = value - 1
    table[255] = 255
    return table


def _coco_stuff_table() -> list[int]:
    """stuffthingmaps value (COCO id - 1, 0..181) -> COCO-Stuff-171 trainId
    (docs/datasets.md §2.3)."""
    table = [-1] * 256
    for train_id, value in enumerate(load_ids("coco_stuff.ids")):
        table[value] = train_id
    table[255] = 255
    return table


def _coco_object_table() -> list[int]:
    """stuffthingmaps value -> COCO-Object: things -> trainId + 1; stuff and 255 -> 0
    (docs/datasets.md §2.4)."""
    stuff = _coco_stuff_table()
    return [t + 1 if 0 <= t < 80 else 0 if t >= 80 else -1 for t in stuff]


TABLES = {
    "voc20b": _voc20b_table,
    "coco_stuff_raw": _coco_stuff_table,
    "coco_object_raw": _coco_object_table,
}

_VOC = "VOCdevkit/VOC2012"
_VOC_SPLIT = (f"{_VOC}/ImageSets/Segmentation/{{split}}.txt",)
_VOC_D2 = {"val": "validation", "train": "training"}
_PC = "VOCdevkit/VOC2010"
_PC_SPLIT = (f"{_PC}/ImageSets/SegmentationContext/{{split}}.txt",)
_VOC_COUNTS = {"val": (1449,), "train": (1464,)}
_PC_COUNTS = {"val": (5105, 5104), "train": (4998,)}
_COCO_COUNTS = {"val": (5000,), "train": (118287,)}
_VIDEO_COUNTS = {"val": (343,), "train": (2806,), "test": (387,)}
_COCO_LABEL_DIRS = ("coco_stuff164k/annotations/{split}",)
_COCO_IMAGES = "coco_stuff164k/images/{split}"


def _voc(labels: dict[str, tuple[str, str]], mmseg_decoder: str, table: str | None = None):
    """VOC layouts: MMSeg (palette PNG + split file) plus the detectron2 folders in ``labels``."""
    layouts = [
        Layout(
            "mmseg",
            f"{_VOC}/JPEGImages",
            f"{_VOC}/SegmentationClass",
            decoder=mmseg_decoder,
            split_files=_VOC_SPLIT,
            table=table,
        )
    ]
    for layout_id, (images, folder) in labels.items():
        splits = _VOC_D2 if layout_id == "fcclip" else {}
        layouts.append(Layout(layout_id, images, folder, splits=splits))
    return tuple(layouts)


def _coco(mmseg_suffix: str, d2: bool, raw_table: str) -> tuple[Layout, ...]:
    mmseg = Layout(
        "mmseg", _COCO_IMAGES, _COCO_LABEL_DIRS[0], label_suffix=mmseg_suffix, splits=COCO_SPLITS
    )
    raw = (
        Layout(
            "raw",
            _COCO_IMAGES,
            _COCO_LABEL_DIRS[0],
            decoder="lut",
            table=raw_table,
            exclude=("_labelTrainIds.png", "_instanceTrainIds.png"),
            splits=COCO_SPLITS,
        ),
        Layout(
            "raw", "coco/{split}", "coco/stuffthingmaps/{split}", "lut", table=raw_table,
            splits=COCO_SPLITS,
        ),
    )  # fmt: skip
    if not d2:
        return (mmseg, *raw)
    detectron2 = tuple(
        Layout(layout_id, images, labels, splits=COCO_SPLITS)
        for layout_id, images, labels in (
            ("catseg", "coco-stuff/images/{split}", "coco-stuff/annotations_detectron2/{split}"),
            ("catseg", "coco/images/{split}", "coco/annotations_detectron2/{split}"),
            ("san", "coco/{split}", "coco/stuffthingmaps_detectron2/{split}"),
        )
    )
    return (mmseg, *detectron2, *raw)


def _pc(pc59: bool) -> tuple[Layout, ...]:
    mmseg = Layout(
        "mmseg",
        f"{_PC}/JPEGImages",
        f"{_PC}/SegmentationClassContext",
        decoder="reduce_zero" if pc59 else "identity",
        split_files=_PC_SPLIT,
    )
    if not pc59:
        return (mmseg,)
    return (
        mmseg,
        Layout("catseg", f"{_PC}/JPEGImages", f"{_PC}/annotations_detectron2/pc59_{{split}}"),
        Layout("fcclip", "pascal_ctx_d2/images/{split}",
               "pascal_ctx_d2/annotations_ctx59/{split}", splits=_VOC_D2),
        Layout("san", "pcontext/{split}/image", "pcontext/{split}/label"),
    )  # fmt: skip


def _tiff(layout_id: str, images: str, labels: str, ignore: tuple[int, ...], **kw) -> Layout:
    return Layout(
        layout_id, images, labels, "tiff16", label_suffix=".tif", disk_ignore=ignore, **kw
    )


_PC459_IGNORE = (65535, 459)
_PANOPTIC_JSON = "coco/annotations/panoptic_{split}.json"

SPECS: dict[str, DatasetSpec] = {
    spec.id: spec
    for spec in (
        DatasetSpec(
            "voc21", 21, "voc21",
            _voc({"fcclip": ("pascal_voc_d2/images/{split}",
                             "pascal_voc_d2/annotations_pascal21/{split}")}, "identity"),
            _VOC_COUNTS, "PASCAL VOC 2012, 20 classes + background (0)",
        ),
        DatasetSpec(
            "voc20", 20, "voc20",
            _voc({"catseg": (f"{_VOC}/JPEGImages", f"{_VOC}/annotations_detectron2/{{split}}"),
                  "san": ("VOC2012/JPEGImages", "VOC2012/annotations_detectron2/{split}"),
                  "fcclip": ("pascal_voc_d2/images/{split}",
                             "pascal_voc_d2/annotations_pascal20/{split}")}, "reduce_zero"),
            _VOC_COUNTS, "PASCAL VOC 2012, 20 classes, background ignored",
        ),
        DatasetSpec(
            "voc20b", 21, "voc20b",
            _voc({"catseg": (f"{_VOC}/JPEGImages",
                             f"{_VOC}/annotations_detectron2_bg/{{split}}")}, "lut", "voc20b"),
            _VOC_COUNTS, "PASCAL VOC 2012, 20 classes + background (20)",
        ),
        DatasetSpec(
            "voc_aug", 21, "voc21",
            (Layout("mmseg", f"{_VOC}/JPEGImages", f"{_VOC}/SegmentationClassAug",
                    split_files=_VOC_SPLIT, splits={"train": "trainaug"}),),
            {"train": (10582,), "val": (1449,), "aug": (9118,)},
            "PASCAL VOC 2012 + SBD train_aug, 21 classes",
        ),
        DatasetSpec(
            "voc20_aug", 20, "voc20",
            (Layout("mmseg", f"{_VOC}/JPEGImages", f"{_VOC}/SegmentationClassAug", "reduce_zero",
                    split_files=_VOC_SPLIT, splits={"train": "trainaug"}),),
            {"train": (10582,), "val": (1449,), "aug": (9118,)},
            "PASCAL VOC 2012 + SBD train_aug, 20 classes, background ignored (ZegCLIP/TagCLIP)",
        ),
        DatasetSpec("pc60", 60, "pc60", _pc(pc59=False), _PC_COUNTS,
                    "PASCAL Context, 59 classes + background (0)"),
        DatasetSpec("pc59", 59, "pc59", _pc(pc59=True), _PC_COUNTS,
                    "PASCAL Context, 59 classes, background ignored"),
        DatasetSpec(
            "pc459", 459, "pc459",
            (_tiff("catseg", f"{_PC}/JPEGImages", f"{_PC}/annotations_detectron2/pc459_{{split}}",
                   _PC459_IGNORE),
             _tiff("fcclip", "pascal_ctx_d2/images/{split}",
                   "pascal_ctx_d2/annotations_ctx459/{split}", _PC459_IGNORE, splits=_VOC_D2),
             _tiff("san", "pcontext_full/{split}/image", "pcontext_full/{split}/label",
                   _PC459_IGNORE)),
            _PC_COUNTS, "PASCAL Context full, 459 classes",
        ),
        DatasetSpec("coco_stuff", 171, "coco_stuff",
                    _coco("_labelTrainIds.png", True, "coco_stuff_raw"), _COCO_COUNTS,
                    "COCO-Stuff 164k, 171 classes"),
        DatasetSpec("coco_object", 81, "coco_object",
                    _coco("_instanceTrainIds.png", False, "coco_object_raw"), _COCO_COUNTS,
                    "COCO-Object (from stuffthingmaps), 80 things + background (0)"),
        DatasetSpec(
            "coco_panoptic", 133, "coco_panoptic",
            (Layout("d2", "coco/{split}", "coco/panoptic_semseg_{split}", splits=COCO_SPLITS),
             Layout("d2", "coco/{split}", "coco/panoptic_{split}", "coco_panoptic",
                    panoptic_json=_PANOPTIC_JSON, splits=COCO_SPLITS),
             Layout("mmdet", "coco/{split}", "coco/annotations/panoptic_{split}",
                    "coco_panoptic", panoptic_json=_PANOPTIC_JSON, splits=COCO_SPLITS)),
            _COCO_COUNTS, "COCO panoptic 2017 as semantic segmentation, 133 classes",
        ),
        DatasetSpec(
            "ade150", 150, "ade150",
            (Layout("d2", "ADEChallengeData2016/images/{split}",
                    "ADEChallengeData2016/annotations_detectron2/{split}", splits=ADE_SPLITS),
             Layout("mmseg", "ade/ADEChallengeData2016/images/{split}",
                    "ade/ADEChallengeData2016/annotations/{split}", "reduce_zero",
                    splits=ADE_SPLITS),
             Layout("raw", "ADEChallengeData2016/images/{split}",
                    "ADEChallengeData2016/annotations/{split}", "reduce_zero",
                    splits=ADE_SPLITS)),
            {"val": (2000,), "train": (20210,)}, "ADE20K SceneParsing, 150 classes",
        ),
        DatasetSpec(
            "ade847", 847, "ade847.synonyms",
            (_tiff("d2", "ADE20K_2021_17_01/images_detectron2/{split}",
                   "ADE20K_2021_17_01/annotations_detectron2/{split}", (65535,),
                   splits=ADE_SPLITS),),
            {"val": (2000,), "train": (25574,)}, "ADE20K-Full, 847 classes",
        ),
        DatasetSpec(
            "cityscapes", 19, "cityscapes",
            (Layout("official", "cityscapes/leftImg8bit/{split}", "cityscapes/gtFine/{split}",
                    label_suffix="_gtFine_labelTrainIds.png", image_suffix="_leftImg8bit",
                    recursive=True),),
            {"val": (500,), "train": (2975,), "test": (1525,)}, "Cityscapes, 19 classes",
        ),
        DatasetSpec(
            "vspw", 124, "vspw",
            tuple(Layout(layout_id, f"{top}/data/{{video}}/origin", f"{top}/data/{{video}}/mask",
                         "vspw", split_files=(f"{top}/{{split}}.txt",))
                  for layout_id, top in (("480p", "VSPW_480p"), ("full", "VSPW"))),
            _VIDEO_COUNTS, "VSPW video, 124 classes (counts are videos)", video=True,
        ),
        DatasetSpec(
            "vipseg", 124, "vipseg",
            (Layout("720p", "VIPSeg_720P/images/{video}", "VIPSeg_720P/panomasks/{video}",
                    "vipseg", split_files=("VIPSeg_720P/{split}.txt", "VIPSeg/{split}.txt")),
             Layout("official", "VIPSeg/imgs/{video}", "VIPSeg/panomasks/{video}", "vipseg",
                    split_files=("VIPSeg/{split}.txt",))),
            _VIDEO_COUNTS, "VIPSeg video (semantic view), 124 classes (counts are videos)",
            video=True,
        ),
    )
}  # fmt: skip
