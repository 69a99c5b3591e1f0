"""COCO-Stuff-171 and COCO-Object label maps from the official stuffthingmaps
(docs/datasets.md §2.3, §2.4, §6.1).

Input: ``stuffthingmaps_trainval2017.zip`` or its folder (``train2017/*.png``, ``val2017/*.png``;
value = COCO id - 1, 255 unlabeled). Output, MMSeg's layout beside the raw maps:
``DST/coco_stuff164k/annotations/<split>/<stem>_labelTrainIds.png`` (182 -> 171 table) and
``<stem>_instanceTrainIds.png`` (things -> trainId + 1, stuff and unlabeled -> 0, as GroupViT's
``convert_coco_object.py``). Images go to ``DST/coco_stuff164k/images/<split>`` (copy or link
``train2017``/``val2017`` of the COCO images there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from vocaseg.data.decoders import UNKNOWN
from vocaseg.data.imageio import read_label, write_label
from vocaseg.data.layouts import TABLES
from vocaseg.data.prepare.common import Report, find_folder
from vocaseg.errors import DatasetError

SPLITS = {"val2017": 5000, "train2017": 118287}


def convert_coco(root: Path, dst: Path, objects: bool = True) -> Report:
    """Write ``*_labelTrainIds.png`` (and ``*_instanceTrainIds.png`` when ``objects``)."""
    stuff = np.asarray(TABLES["coco_stuff_raw"](), dtype=np.int64)
    things = np.asarray(TABLES["coco_object_raw"](), dtype=np.int64)
    report = Report("coco_stuff" + (" + coco_object" if objects else ""), dst)
    for split, expected in SPLITS.items():
        try:
            folder = find_folder(root, split, "expected the stuffthingmaps train2017/val2017")
        except DatasetError:
            report.missing.append(f"{split} (not in {root.name})")
            continue
        raw = sorted(p for p in folder.glob("*.png") if not p.stem.endswith("TrainIds"))
        out = dst / "coco_stuff164k/annotations" / split
        for path in tqdm(raw, desc=f"coco {split}", unit="map"):
            values = read_label(path)
            if values.ndim != 2 or (stuff[values] == UNKNOWN).any():
                bad = (
                    np.unique(values[stuff[values] == UNKNOWN]).tolist() if values.ndim == 2 else []
                )
                raise DatasetError(f"{path} is not a stuffthingmap (values {bad[:5]})")
            write_label(out / f"{path.stem}_labelTrainIds.png", stuff[values].astype(np.uint8))
            if objects:
                write_label(
                    out / f"{path.stem}_instanceTrainIds.png", things[values].astype(np.uint8)
                )
        report.counts[split] = len(raw)
        report.expected[split] = expected
    report.notes.append("images: put COCO train2017/val2017 under coco_stuff164k/images/")
    return report
