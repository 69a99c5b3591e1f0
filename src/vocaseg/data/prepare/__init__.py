"""Converters from official dataset releases to the files the readers take (docs/datasets.md §6).

``prepare(name, src, dst)`` checks that ``dst`` can be written, unpacks an archive ``src`` under
``dst/.extracted/`` for the length of the run (removed afterwards, also on failure, unless
``keep_extracted``), runs one converter and returns its :class:`Report`. ``CONVERTERS`` names
them: ``coco_stuff`` (also writes COCO-Object), ``coco_object``, ``ade847``, ``pc59`` / ``pc60``
(from ``trainval_merged.json``, or ``source="mat"``), ``pc459``, ``voc_aug``, ``cityscapes``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vocaseg.data.prepare.ade847 import convert_ade847
from vocaseg.data.prepare.cityscapes import convert_cityscapes
from vocaseg.data.prepare.coco import convert_coco
from vocaseg.data.prepare.common import (
    Report,
    check_writable,
    extract,
    is_archive,
    remove_extracted,
    write_error,
)
from vocaseg.data.prepare.context import convert_context_json, convert_context_mat
from vocaseg.data.prepare.voc_aug import convert_voc_aug
from vocaseg.errors import DatasetError


@dataclass(frozen=True)
class Converter:
    """One dataset's converters by input kind (the first is the default) and what they take."""

    runs: dict[str, Callable[[Path, Path], Report]]
    what: str


_CONTEXT = {"json": convert_context_json, "mat": partial(convert_context_mat, full=False)}
_CONTEXT_WHAT = "trainval_merged.json -> SegmentationClassContext (--from mat: trainval.tar.gz)"

CONVERTERS: dict[str, Converter] = {
    "coco_stuff": Converter({"release": convert_coco},
                            "stuffthingmaps_trainval2017.zip -> *_labelTrainIds.png (+ COCO-Object)"),
    "coco_object": Converter({"release": convert_coco},
                             "stuffthingmaps_trainval2017.zip -> *_instanceTrainIds.png"),
    "ade847": Converter({"release": convert_ade847},
                        "ADE20K_2021_17_01 -> images/annotations_detectron2 (uint16 TIFF)"),
    "pc59": Converter(_CONTEXT, _CONTEXT_WHAT),
    "pc60": Converter(_CONTEXT, "same as pc59"),
    "pc459": Converter({"mat": partial(convert_context_mat, full=True)},
                       "Context trainval.tar.gz -> pc459 uint16 TIFF"),
    "voc_aug": Converter({"release": convert_voc_aug},
                         "SBD benchmark.tgz + VOC2012 -> SegmentationClassAug, trainaug.txt"),
    "cityscapes": Converter({"release": convert_cityscapes},
                            "gtFine_trainvaltest.zip -> *_gtFine_labelTrainIds.png"),
}  # fmt: skip

__all__ = ["CONVERTERS", "Converter", "Report", "prepare"]


def _pick(name: str, source: str | None) -> Callable[[Path, Path], Report]:
    if name not in CONVERTERS:
        raise DatasetError(
            f"no converter for {name!r}; converters: {', '.join(CONVERTERS)} (the other datasets "
            "are read as distributed)"
        )
    runs = CONVERTERS[name].runs
    if source is None:
        return next(iter(runs.values()))
    if source not in runs:
        takes = [f"{n} ({', '.join(c.runs)})" for n, c in CONVERTERS.items() if "mat" in c.runs]
        raise DatasetError(
            f"--from {source} does not apply to {name}; --from applies to {', '.join(takes)}"
        )
    return runs[source]


def prepare(
    name: str,
    src: str | Path,
    dst: str | Path,
    source: str | None = None,
    keep_extracted: bool = False,
) -> Report:
    """Convert the official release at ``src`` (archive, folder or file) into ``dst``.

    ``source`` picks the input kind where a dataset has several (``"json"`` or ``"mat"`` for
    pc59/pc60); ``keep_extracted`` keeps an unpacked archive under ``dst/.extracted`` for reuse.
    """
    run = _pick(name, source)
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.exists():
        raise DatasetError(f"source {src} not found; pass the downloaded archive or its folder")
    check_writable(dst)
    unpacked = extract(src, dst) if is_archive(src) else None
    try:
        report = run(unpacked or src, dst)
    except BaseException as err:
        note = _clean_up(unpacked, keep_extracted)
        error = write_error(err, dst) if isinstance(err, OSError) else err
        if not isinstance(error, DatasetError):
            raise
        text = _inside(str(error), unpacked, src, keep_extracted)
        raise DatasetError(f"{text}; {note}" if note else text) from None
    note = _clean_up(unpacked, keep_extracted)
    report.missing = [_inside(m, unpacked, src, keep_extracted) for m in report.missing]
    if note:
        report.notes.append(note)
    return report


def _inside(text: str, unpacked: Path | None, src: Path, keep: bool) -> str:
    """Name files of a removed extracted copy as ``archive:member`` (the copy is gone)."""
    if unpacked is None or keep:
        return text
    return text.replace(f"{unpacked}{os.sep}", f"{src.name}:").replace(str(unpacked), src.name)


def _clean_up(unpacked: Path | None, keep: bool) -> str | None:
    """Remove the extracted copy unless kept; a note when it stays."""
    if unpacked is None:
        return None
    if keep:
        return f"extracted copy kept at {unpacked} (--keep-extracted; delete it when done)"
    if not remove_extracted(unpacked):
        return f"the extracted copy {unpacked} could not be removed; delete it"
    return None
