"""PASCAL VOC train_aug: SBD ``cls/*.mat`` -> ``SegmentationClassAug/*.png``
(docs/datasets.md §2.1, §6.4).

Inputs: ``--src`` the SBD release (``benchmark.tgz`` or its ``benchmark_RELEASE/dataset`` folder
with ``cls/*.mat`` holding ``GTcls.Segmentation``, ``train.txt``, ``val.txt``) and ``--dst`` the
folder holding ``VOCdevkit/VOC2012`` (official VOC 2012 trainval). Writes, under VOC2012:
``SegmentationClassAug/<id>.png`` (SBD masks, no void band; VOC's own masks for VOC train and val
ids, so that one folder serves every split) and ``ImageSets/Segmentation/trainaug.txt`` (VOC train
∪ SBD train ∪ SBD val − VOC val, 10,582) and ``aug.txt`` (trainaug − VOC train, 9,118), as
MMSeg's ``voc_aug.py`` defines them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from vocaseg.data.imageio import read_label, write_label
from vocaseg.data.prepare.common import Report, find_folder, write_lines
from vocaseg.errors import DatasetError

TRAINAUG, AUG = 10582, 9118


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} not found; it ships with the official release")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def sbd_mask(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` as uint8 ``[H, W]`` (0 bg, 1..20)."""
    mat = scipy.io.loadmat(path, mat_dtype=True, squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, dtype=np.uint8)


def convert_voc_aug(root: Path, dst: Path) -> Report:
    sbd = find_folder(root, "cls", "expected SBD's dataset/cls/*.mat").parent
    voc = dst / "VOCdevkit/VOC2012"
    splits = voc / "ImageSets/Segmentation"
    voc_train, voc_val = _read_ids(splits / "train.txt"), _read_ids(splits / "val.txt")
    sbd_ids = _read_ids(sbd / "train.txt") + _read_ids(sbd / "val.txt")
    trainaug = sorted(set(voc_train) | (set(sbd_ids) - set(voc_val)))
    aug = sorted(set(trainaug) - set(voc_train))
    out = voc / "SegmentationClassAug"
    report = Report("voc_aug", dst, expected={"trainaug": TRAINAUG, "aug": AUG})
    for image_id in tqdm(sorted(set(trainaug) | set(voc_val)), desc="voc_aug", unit="mask"):
        own = voc / "SegmentationClass" / f"{image_id}.png"
        mat = sbd / "cls" / f"{image_id}.mat"
        if image_id in aug and mat.is_file():
            write_label(out / f"{image_id}.png", sbd_mask(mat))
        elif own.is_file():
            write_label(out / f"{image_id}.png", read_label(own))
        else:
            report.missing.append(str(mat if image_id in aug else own))
    write_lines(splits / "trainaug.txt", trainaug)
    write_lines(splits / "aug.txt", aug)
    report.counts.update(trainaug=len(trainaug), aug=len(aug))
    return report
