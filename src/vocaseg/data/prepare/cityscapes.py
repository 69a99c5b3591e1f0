"""Cityscapes ``labelIds`` -> ``labelTrainIds`` (docs/datasets.md §2.8, §6.5).

The official ``gtFine_trainvaltest.zip`` holds ``gtFine/<split>/<city>/*_gtFine_labelIds.png``
(the 34 label ids of ``cityscapesScripts/helpers/labels.py``) but not the 19-class trainId maps the
benchmark reads, which ``cityscapesScripts``' ``createTrainIdLabelImgs`` draws from the polygons.
Mapping the labelIds with the official table gives the same maps: both are drawn from the same
polygons in the same order, and the labels it skips (license plate, id -1) are skipped in both.
The 19 evaluated ids (road 7, sidewalk 8, building 11, wall 12, fence 13, pole 17, traffic light
19, traffic sign 20, vegetation 21, terrain 22, sky 23, person 24, rider 25, car 26, truck 27, bus
28, train 31, motorcycle 32, bicycle 33) become 0..18; every other value becomes 255 (ignored).

Output: ``DST/cityscapes/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``, beside the
labelIds when ``--src`` is ``DST/cityscapes`` (the extracted release). The reader also needs the
images: extract ``leftImg8bit_trainvaltest.zip`` into ``DST/cityscapes``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from vocaseg.data.imageio import read_label, write_label
from vocaseg.data.prepare.common import Report, find_folder

TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
LABEL_IDS = "_gtFine_labelIds.png"
TRAIN_IDS = "_gtFine_labelTrainIds.png"
EXPECTED = {"train": 2975, "val": 500, "test": 1525}


def train_id_lut() -> np.ndarray:
    """labelIds value (0..255) -> trainId: the 19 evaluated ids -> 0..18, all others -> 255."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[list(TRAIN_LABEL_IDS)] = np.arange(len(TRAIN_LABEL_IDS), dtype=np.uint8)
    return lut


def convert_cityscapes(root: Path, dst: Path) -> Report:
    """Write ``*_gtFine_labelTrainIds.png`` for every ``*_gtFine_labelIds.png`` under ``gtFine``."""
    gt_fine = find_folder(root, "gtFine", "expected the official gtFine_trainvaltest release")
    out_root = dst / "cityscapes/gtFine"
    lut = train_id_lut()
    report = Report("cityscapes", dst)
    for split, expected in EXPECTED.items():
        files = sorted((gt_fine / split).rglob(f"*{LABEL_IDS}"))
        if not files:
            report.missing.append(f"gtFine/{split} (not in {root.name})")
            continue
        written = 0
        for path in tqdm(files, desc=f"cityscapes {split}", unit="map"):
            labels = read_label(path)
            if labels.ndim != 2:
                report.missing.append(f"{path} (not a single-channel labelIds map)")
                continue
            name = path.name[: -len(LABEL_IDS)] + TRAIN_IDS
            train_ids = lut[np.minimum(labels, 255)]  # values past the table (none official) -> 255
            write_label(out_root / path.parent.relative_to(gt_fine) / name, train_ids)
            written += 1
        report.counts[split] = written
        report.expected[split] = expected
    report.notes.append("images: extract leftImg8bit_trainvaltest.zip into DST/cityscapes")
    return report
