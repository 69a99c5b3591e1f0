"""Converters from official dataset releases to the files the readers take (datasets spec §2).

``prepare(name, src, dst)`` runs one converter and returns its :class:`Report`; ``CONVERTERS``
names them: ``coco_stuff`` (also writes COCO-Object), ``coco_object``, ``ade847``, ``pc59``
(PC-59/60), ``pc459``, ``voc_aug``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from vocaseg.data.prepare.ade847 import convert_ade847
from vocaseg.data.prepare.coco import convert_coco
from vocaseg.data.prepare.common import Report
from vocaseg.data.prepare.context import convert_context
from vocaseg.data.prepare.voc_aug import convert_voc_aug
from vocaseg.errors import DatasetError

CONVERTERS: dict[str, tuple[Callable[[str | Path, str | Path], Report], str]] = {
    "coco_stuff": (convert_coco, "stuffthingmaps_trainval2017.zip -> *_labelTrainIds.png (+ COCO-Object)"),
    "coco_object": (convert_coco, "stuffthingmaps_trainval2017.zip -> *_instanceTrainIds.png"),
    "ade847": (convert_ade847, "ADE20K_2021_17_01 -> images/annotations_detectron2 (uint16 TIFF)"),
    "pc59": (partial(convert_context, full=False), "Context trainval.tar.gz -> SegmentationClassContext"),
    "pc60": (partial(convert_context, full=False), "same as pc59"),
    "pc459": (partial(convert_context, full=True), "Context trainval.tar.gz -> pc459 uint16 TIFF"),
    "voc_aug": (convert_voc_aug, "SBD benchmark.tgz + VOC2012 -> SegmentationClassAug, trainaug.txt"),
}  # fmt: skip

__all__ = ["CONVERTERS", "Report", "prepare"]


def prepare(name: str, src: str | Path, dst: str | Path) -> Report:
    """Convert the official release at ``src`` (archive or folder) into ``dst``."""
    if name not in CONVERTERS:
        raise DatasetError(
            f"no converter for {name!r}; converters: {', '.join(CONVERTERS)} (the other datasets "
            "are read as distributed)"
        )
    return CONVERTERS[name][0](src, dst)
