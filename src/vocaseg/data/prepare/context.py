"""PASCAL Context PC-59/60 and PC-459 labels from the full-annotation ``.mat`` files (spec §2.2).

Input: ``trainval.tar.gz`` or its folder (``trainval/<id>.mat`` with a uint16 ``LabelMap``, 1..459,
0 unlabeled). The sample lists come from ``trainval_merged.json`` (its ``images`` ``phase``) when
it is found beside the ``.mat`` files, else from existing ``ImageSets/SegmentationContext``
lists under DST. Outputs, under ``DST/VOCdevkit/VOC2010``:

- ``pc59``: ``SegmentationClassContext/<id>.png``: the 60 source ids of ``pc60.ids`` (sorted,
  0 first) -> 0..59, every other id -> 0 (background), MMSeg's layout for pc60 and pc59.
- ``pc459``: ``annotations_detectron2/pc459_<split>/<id>.tif``: LabelMap - 1, 0 -> 65535, uint16
  TIFF (CAT-Seg's layout).

This path decodes the ``.mat`` label maps; MMSeg's converter rasterises the JSON's 59-class
segments instead (the two are expected to agree; checking it needs the real release).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from vocaseg.data.classlists import load_ids
from vocaseg.data.imageio import write_label
from vocaseg.data.prepare.common import Report, find_folder, source_dir, write_lines
from vocaseg.errors import DatasetError

EXPECTED = {"train": 4998, "val": 5105}


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


def _split_lists(mats: Path, voc: Path) -> dict[str, list[str]]:
    for candidate in (mats.parent / "trainval_merged.json", mats / "trainval_merged.json"):
        if candidate.is_file():
            images = json.loads(candidate.read_text(encoding="utf-8"))["images"]
            lists: dict[str, list[str]] = {"train": [], "val": []}
            for image in images:
                if image.get("phase") in lists:
                    lists[image["phase"]].append(Path(image["file_name"]).stem)
            return {k: sorted(v) for k, v in lists.items()}
    folder = voc / "ImageSets/SegmentationContext"
    if not (folder / "val.txt").is_file():
        raise DatasetError(
            f"no sample lists: put trainval_merged.json beside {mats} or the lists "
            f"train.txt/val.txt in {folder}"
        )
    return {
        split: (folder / f"{split}.txt").read_text().split()
        for split in EXPECTED
        if (folder / f"{split}.txt").is_file()
    }


def convert_context(src: str | Path, dst: str | Path, full: bool) -> Report:
    """Write PC-59/60 PNGs (``full=False``) or PC-459 TIFFs (``full=True``)."""
    dst = Path(dst)
    mats = find_folder(source_dir(src, dst), "trainval", "expected trainval/<id>.mat")
    voc = dst / "VOCdevkit/VOC2010"
    lists = _split_lists(mats, voc)
    report = Report("pc459" if full else "pc59", dst, expected=dict(EXPECTED))
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
    report.notes.append("images: extract VOCtrainval_03-May-2010.tar into DST (VOC2010/JPEGImages)")
    return report
