"""PASCAL Context PC-59/60 and PC-459 label maps (docs/datasets.md §2.2, §6.2).

PC-59/60, default (``--from json``): from ``trainval_merged.json`` of PASCAL in Detail, as
MMSegmentation's ``tools/dataset_converters/pascal_context.py`` builds them with the Detail API's
``getMask``: for each image of the phase, a map of zeros where each ``annos_segmentation`` segment
of the image, in the file's order, paints its ``category_id`` (459-class id space) over the pixels
of its COCO RLE mask, so later segments win where they overlap. The 60 source ids of ``pc60.ids``
(sorted, 0 first) then become 0..59. Output: ``DST/VOCdevkit/VOC2010/SegmentationClassContext/
<id>.png`` and ``ImageSets/SegmentationContext/{train,val}.txt`` (the JSON's phases), the layout the
pc59 (reduce-zero) and pc60 readers take.

PC-59/60 alternative (``--from mat``) and PC-459: from ``trainval.tar.gz`` (``trainval/<id>.mat``
with a uint16 ``LabelMap``, 1..459, 0 unlabeled), sample lists from ``trainval_merged.json`` beside
the ``.mat`` files or existing lists under DST. PC-59/60 maps the 60 source ids as above and every
other id to 0 (background); this is the full annotation, not the JSON's 59-class segments, and
MMSegmentation reports the two differ (open-mmlab/mmsegmentation#474). PC-459 writes
``annotations_detectron2/pc459_<split>/<id>.tif``: LabelMap - 1, 0 -> 65535, uint16 TIFF (CAT-Seg's
layout).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from tqdm import tqdm

from vocaseg.data.classlists import load_ids
from vocaseg.data.imageio import write_label
from vocaseg.data.prepare.common import Report, find_folder, write_lines
from vocaseg.data.prepare.rle import decode_rle
from vocaseg.errors import DatasetError

EXPECTED = {"train": 4998, "val": 5105}
DETAIL_JSON = "trainval_merged.json"
_IMAGES_NOTE = "images: extract VOCtrainval_03-May-2010.tar into DST (VOCdevkit/VOC2010/JPEGImages)"


def label_map(path: Path) -> np.ndarray:
    """``LabelMap`` of a Context ``.mat`` as uint16 ``[H, W]`` (1..459, 0 unlabeled)."""
    return np.asarray(scipy.io.loadmat(path)["LabelMap"], dtype=np.uint16)


def pc60_lut() -> np.ndarray:
    """459-space id (0..459) -> PC-60 id; ids outside the 59 classes -> 0 (background)."""
    lut = np.zeros(460, dtype=np.uint8)
    for index, source_id in enumerate(load_ids("pc60.ids")):
        lut[source_id] = index
    return lut


def pc459_label(labels: np.ndarray) -> np.ndarray:
    """LabelMap -> PC-459 trainIds: v - 1, unlabeled (0) -> 65535."""
    return np.where(labels == 0, 65535, labels.astype(np.int64) - 1).astype(np.uint16)


def detail_class_maps(
    annotations: Mapping[str, Any], phase: str
) -> Iterator[tuple[str, np.ndarray]]:
    """(file stem, 459-space class map int64 [H, W]) of every image of ``phase``, in JSON order.

    Images and segments are indexed by id as the Detail API does (the first position of an id,
    its last record); a segment paints ``category_id`` wherever its mask is set.
    """
    images = {image["image_id"]: image for image in annotations["images"]}
    by_image: dict[Any, list[Mapping]] = {}
    for segment in {s["id"]: s for s in annotations["annos_segmentation"]}.values():
        by_image.setdefault(segment["image_id"], []).append(segment)
    for image_id, image in images.items():
        if image.get("phase") != phase:
            continue
        classes = np.zeros((int(image["height"]), int(image["width"])), dtype=np.int64)
        for segment in by_image.get(image_id, []):
            where = f"segment {segment['id']} of {image['file_name']}"
            mask = decode_rle(segment["segmentation"], where)
            if mask.shape != classes.shape:
                raise DatasetError(
                    f"{where} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                    f"{classes.shape[1]}x{classes.shape[0]}; re-download {DETAIL_JSON}"
                )
            classes[mask] = segment["category_id"]
        yield Path(image["file_name"]).stem, classes


def _find_json(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(root.rglob(DETAIL_JSON), key=lambda p: len(p.parts))
    if not found:
        raise DatasetError(
            f"no {DETAIL_JSON} under {root}; pass the file (PASCAL in Detail's annotations) "
            "with --src, or --from mat with trainval.tar.gz"
        )
    return found[0]


def _read_json(path: Path, keys: tuple[str, ...] = ("images", "annos_segmentation")) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); download it again") from None
    if not isinstance(data, dict) or not set(keys) <= data.keys():
        raise DatasetError(
            f"{path} lacks {' or '.join(repr(k) for k in keys)}; expected PASCAL in Detail's "
            f"{DETAIL_JSON}"
        )
    return data


def convert_context_json(root: Path, dst: Path) -> Report:
    """PC-59/60 PNGs painted from the JSON's segments (``root``: the file or a folder with it)."""
    data = _read_json(_find_json(root))
    voc = dst / "VOCdevkit/VOC2010"
    lut, table = pc60_lut(), np.asarray(load_ids("pc60.ids"))
    report = Report("pc59/pc60", dst, expected=dict(EXPECTED))
    outside: set[int] = set()
    for split in EXPECTED:
        stems = []
        for stem, classes in tqdm(detail_class_maps(data, split), desc=f"context {split}",
                                  unit="map"):  # fmt: skip
            unknown = ~np.isin(classes, table)
            if unknown.any():
                outside.update(np.unique(classes[unknown]).tolist())
                classes = np.where(unknown, 0, classes)
            write_label(voc / f"SegmentationClassContext/{stem}.png", lut[classes])
            stems.append(stem)
        write_lines(voc / f"ImageSets/SegmentationContext/{split}.txt", sorted(stems))
        report.counts[split] = len(stems)
    if outside:
        report.notes.append(
            f"category ids outside PC-60 painted as background: {sorted(outside)[:10]} "
            "(MMSegmentation's converter stops on them)"
        )
    report.notes.append(_IMAGES_NOTE)
    return report


def _split_lists(mats: Path, voc: Path) -> dict[str, list[str]]:
    for candidate in (mats.parent / DETAIL_JSON, mats / DETAIL_JSON):
        if candidate.is_file():
            images = _read_json(candidate, ("images",))["images"]
            lists: dict[str, list[str]] = {"train": [], "val": []}
            for image in images:
                if image.get("phase") in lists:
                    lists[image["phase"]].append(Path(image["file_name"]).stem)
            return {k: sorted(v) for k, v in lists.items()}
    folder = voc / "ImageSets/SegmentationContext"
    if not (folder / "val.txt").is_file():
        raise DatasetError(
            f"no sample lists: put {DETAIL_JSON} beside {mats} or the lists "
            f"train.txt/val.txt in {folder}"
        )
    return {
        split: (folder / f"{split}.txt").read_text().split()
        for split in EXPECTED
        if (folder / f"{split}.txt").is_file()
    }


def convert_context_mat(root: Path, dst: Path, full: bool) -> Report:
    """PC-59/60 PNGs (``full=False``) or PC-459 TIFFs (``full=True``) from the ``.mat`` maps."""
    mats = find_folder(root, "trainval", "expected trainval/<id>.mat (trainval.tar.gz)")
    voc = dst / "VOCdevkit/VOC2010"
    lists = _split_lists(mats, voc)
    report = Report("pc459" if full else "pc59/pc60 (from .mat)", dst, expected=dict(EXPECTED))
    lut = pc60_lut()
    for split, ids in lists.items():
        out = voc / (
            f"annotations_detectron2/pc459_{split}" if full else "SegmentationClassContext"
        )
        written = 0
        for image_id in tqdm(ids, desc=f"context {split}", unit="map"):
            mat = mats / f"{image_id}.mat"
            if not mat.is_file():
                report.missing.append(str(mat))
                continue
            labels = label_map(mat)
            if full:
                write_label(out / f"{image_id}.tif", pc459_label(labels))
            else:
                write_label(out / f"{image_id}.png", lut[labels])
            written += 1
        report.counts[split] = written
        if not full:
            write_lines(voc / f"ImageSets/SegmentationContext/{split}.txt", ids)
    report.notes.append(_IMAGES_NOTE)
    return report
