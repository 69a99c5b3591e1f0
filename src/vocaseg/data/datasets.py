"""Dataset readers: ``load_dataset(name)`` finds a benchmark on disk and serves decoded samples.

Implements the reader contract of docs/datasets.md §1: root discovery (``root=``,
``$VOCASEG_DATASETS``, ``$DETECTRON2_DATASETS``, ``./data``, ``./datasets``), layout probing in
table order (``layouts.py``), decoding to trainIds with strict value checks (``decoders.py``), count
checks against the benchmark table (§2 there) and a record of what was read. ``name="folder"`` reads
a user's own data: ``root/images[/<split>]/*`` + ``root/masks[/<split>]/*.png`` paired by stem,
classes from ``root/classes.txt``, mask values = class ids, 255 = ignore.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vocaseg.data.classlists import class_list_sha256, load_class_list, load_ids, seen_ids
from vocaseg.data.decoders import apply_lut, build_lut, decode_coco_panoptic, ignore_value
from vocaseg.data.imageio import read_image, read_label
from vocaseg.data.layouts import SPECS, TABLES, DatasetSpec, Layout
from vocaseg.data.samples import Sample, list_samples, probe_parts
from vocaseg.errors import DatasetError, VocasegWarning
from vocaseg.hashing import file_sha256, text_sha256
from vocaseg.text.vocab import Vocabulary

ROOT_VARIABLES = ("VOCASEG_DATASETS", "DETECTRON2_DATASETS")
DEFAULT_ROOTS = ("data", "datasets")  # MMSeg's and detectron2's defaults, relative to the cwd
CONVERTIBLE = (
    "coco_stuff",
    "coco_object",
    "ade847",
    "pc59",
    "pc60",
    "pc459",
    "voc_aug",
    "cityscapes",
)


def list_datasets() -> list[str]:
    """Every dataset id ``load_dataset`` accepts (in docs/datasets.md §2 order), then ``folder``."""
    return [*SPECS, "folder"]


def candidate_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Roots to search: ``root`` alone when given, else the environment and default folders."""
    if root is not None:
        return [Path(root).expanduser()]
    found = [os.environ[v] for v in ROOT_VARIABLES if os.environ.get(v)]
    return [Path(p).expanduser() for p in (*found, *DEFAULT_ROOTS)]


def find_layout(
    spec: DatasetSpec, split: str, root: str | os.PathLike | None = None, layout: str | None = None
) -> tuple[Path, Layout]:
    """The first (root, layout) whose image and label folders are non-empty; reads, never writes."""
    layouts = [c for c in spec.layouts if layout is None or c.id == layout]
    if not layouts:
        known = sorted({c.id for c in spec.layouts})
        raise DatasetError(f"{spec.id} has no layout {layout!r}; known layouts: {', '.join(known)}")
    looked: list[str] = []
    halves: list[tuple[Path, Layout, bool]] = []  # layouts with only images (True) or only labels
    for base in candidate_roots(root):
        for candidate in layouts:
            has_images, has_labels = probe_parts(base, candidate, split)
            if has_images and has_labels:
                return base, candidate
            if has_images or has_labels:
                halves.append((base, candidate, has_images))
            looked.append(str(base / candidate.fill(candidate.labels, split)))
    if halves:
        raise DatasetError(_half_found(spec, split, *halves[0]))
    raise DatasetError(
        f"dataset {spec.id!r} (split {split!r}) not found: no images and no labels; looked for "
        f"labels in {', '.join(dict.fromkeys(looked))}. Pass the folder holding it with "
        f"--data-root (root=) or $VOCASEG_DATASETS, {_build_hint(spec.id)}"
    )


def _build_hint(dataset: str, base: Path | str = "DIR") -> str:
    if dataset == "cityscapes":
        return (
            f"or extract gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip into "
            f"{base}/cityscapes and build the trainIds with 'vocaseg datasets prepare cityscapes "
            f"--src {base}/cityscapes --dst {base}'"
        )
    if dataset in CONVERTIBLE:
        return f"or build it with 'vocaseg datasets prepare {dataset} --src ... --dst {base}'"
    return "or download and extract the official release there"


def _half_found(spec: DatasetSpec, split: str, base: Path, layout: Layout, has_images: bool) -> str:
    """What is missing when a layout has only its images or only its labels."""
    images = base / layout.fill(layout.images.split("{video}")[0], split)
    labels = base / layout.fill(layout.labels.split("{video}")[0], split)
    head = f"dataset {spec.id!r} (split {split!r}, layout {layout.id!r}): "
    if not has_images:
        return (
            f"{head}labels found in {labels} but no images in {images}; put the {split} images "
            "of the official release there (copy or link them)"
        )
    files = f"*{layout.label_suffix}"
    return (
        f"{head}images found in {images} but no label files ({files}) in {labels}; "
        f"{_build_hint(spec.id, base).removeprefix('or ')}"
    )


class LabelDecoder:
    """Reads a label file and maps it to trainIds (ignore = ``ignore_index``), strictly."""

    def __init__(
        self,
        layout: Layout,
        num_classes: int,
        root: Path,
        split: str,
        unknown_as_ignore: bool = False,
    ) -> None:
        self.layout = layout
        self.num_classes = num_classes
        self.ignore_index = ignore_value(num_classes)
        self.unknown_as_ignore = unknown_as_ignore
        self._json = (
            root / layout.fill(layout.panoptic_json, split) if layout.panoptic_json else None
        )
        self._luts: dict[int, np.ndarray] = {}
        self._segments: dict[str, list[dict]] | None = None
        self._categories: dict[int, int] | None = None

    def _lut(self, size: int) -> np.ndarray:
        if size not in self._luts:
            table = TABLES[self.layout.table]() if self.layout.table else None
            self._luts[size] = build_lut(
                self.layout.decoder, self.num_classes, self.layout.disk_ignore, table, size
            )
        return self._luts[size]

    def _load_panoptic(self) -> None:
        if self._json is None or not self._json.is_file():
            raise DatasetError(
                f"panoptic annotations {self._json} not found; the PNGs of COCO panoptic need "
                "the JSON of the same release (annotations/panoptic_<split>.json)"
            )
        data = json.loads(self._json.read_text(encoding="utf-8"))
        self._segments = {a["file_name"]: a["segments_info"] for a in data["annotations"]}
        self._categories = {c: i for i, c in enumerate(load_ids("coco_panoptic.ids"))}

    def __call__(self, path: Path) -> np.ndarray:
        raw = read_label(path)
        if self.layout.decoder == "coco_panoptic":
            if self._segments is None:
                self._load_panoptic()
            if path.name not in self._segments:
                raise DatasetError(f"{path.name} has no entry in {self._json}")
            return decode_coco_panoptic(
                raw, self._segments[path.name], self._categories, path, self.unknown_as_ignore
            )
        size = 256 if raw.dtype == np.uint8 else 65536
        return apply_lut(raw, self._lut(size), path, self.ignore_index, self.unknown_as_ignore)


class SegmentationDataset(Sequence):
    """Decoded samples ``{"image": uint8 [H, W, 3], "label": int64 [H, W], "path": str}``."""

    def __init__(
        self,
        name: str,
        samples: list[Sample],
        classes: Vocabulary,
        decode: LabelDecoder,
        record: dict[str, Any],
        video: bool = False,
    ) -> None:
        self.name = name
        self.samples = samples
        self.classes = classes
        self.decode = decode
        self.record = record
        self.videos: dict[str, list[int]] | None = None  # video -> frame indices, frames sorted
        if video:
            self.videos = {}
            for index, sample in enumerate(samples):
                self.videos.setdefault(sample.key.split("/")[0], []).append(index)

    @property
    def class_names(self) -> list[str]:
        return self.classes.class_names

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def ignore_index(self) -> int:
        return ignore_value(self.num_classes)

    @property
    def seen(self) -> tuple[int, ...] | None:
        return self.classes.seen

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = self.samples[index]
        image = read_image(sample.image)
        label = self.decode(sample.label)
        if image.shape[:2] != label.shape:
            raise DatasetError(
                f"label {sample.label} is {label.shape[1]}x{label.shape[0]} but image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]}; re-convert the labels"
            )
        return {"image": image, "label": label, "path": str(sample.image)}

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset({self.name!r}, {len(self)} samples, {self.num_classes} classes)"
        )


def samples_sha256(samples: list[Sample]) -> str:
    """SHA-256 of the sorted (key, label file size) list: which files, and which versions."""
    items = sorted((s.key, s.label.stat().st_size) for s in samples)
    return text_sha256(json.dumps(items))


def _check_count(name: str, split: str, found: int, expected: tuple[int, ...], strict: bool):
    if not expected or found in expected:
        return
    message = (
        f"{name} {split}: found {found} samples, the benchmark has "
        f"{' or '.join(str(n) for n in expected)}; results are not comparable with papers"
    )
    if strict:
        raise DatasetError(message + " (drop --strict to continue anyway)")
    warnings.warn(message, VocasegWarning, stacklevel=3)


def _folder_layout(root: Path, split: str) -> Layout:
    if (root / "images" / split).is_dir():
        return Layout("folder", "images/{split}", "masks/{split}")
    if (root / "images").is_dir():
        return Layout("folder-flat", "images", "masks")
    raise DatasetError(
        f"no images folder under {root}; a folder dataset needs {root}/images/{split}/* and "
        f"{root}/masks/{split}/*.png (or {root}/images/* and {root}/masks/*)"
    )


def _load_folder(root: str | os.PathLike | None, split: str, unknown_as_ignore: bool):
    if root is None:
        raise DatasetError("the 'folder' dataset needs root= (--data-root) pointing at your data")
    root = Path(root).expanduser()
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise DatasetError(
            f"{classes_file} not found; write one class per line (';' between synonyms)"
        )
    classes = Vocabulary.from_file(classes_file)
    layout = _folder_layout(root, split)
    samples = list_samples(root, layout, split)
    if not samples:
        raise DatasetError(
            f"no image/mask pairs under {root / layout.fill(layout.images, split)} and "
            f"{root / layout.fill(layout.labels, split)}; masks must be PNGs named like the images"
        )
    sha = file_sha256(classes_file)
    return root, layout, samples, classes, str(classes_file), sha


#: Evaluation splits whose GT keeps only the seen (``base``) or unseen (``novel``) classes of the
#: dataset's zero-shot split; other pixels are ignored (GKC's VIPSeg benchmark, ``val_all`` is
#: the plain ``val``).
RESTRICTED_SPLITS = {
    "val_all": ("val", None),
    "val_base": ("val", "base"),
    "val_novel": ("val", "novel"),
}


def _restricted(decode: LabelDecoder, classes: Any, keep: str, name: str) -> Any:
    """``decode`` whose labels outside the base (or novel) classes become the ignore value."""
    if classes.seen is None:
        raise DatasetError(f"{name} has no seen/unseen split, so it has no _{keep} split")
    seen = set(classes.seen)
    kept = [i for i in range(len(classes)) if (i in seen) == (keep == "base")]
    table = np.full(decode.ignore_index + 1, decode.ignore_index, dtype=np.int64)
    table[kept] = kept

    def restricted(path: Path) -> np.ndarray:
        return table[decode(path)]

    restricted.ignore_index = decode.ignore_index  # type: ignore[attr-defined]
    return restricted


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "val",
    layout: str | None = None,
    strict: bool = False,
    unknown_as_ignore: bool = False,
) -> SegmentationDataset:
    """Find dataset ``name`` (see :func:`list_datasets`) and return its decoded samples.

    ``layout`` forces a layout id; ``strict`` turns a sample count that differs from the
    benchmark's into an error; ``unknown_as_ignore`` maps label values with no class to ignore
    instead of raising.
    """
    restrict = None
    if name in SPECS and split in RESTRICTED_SPLITS:
        split, restrict = RESTRICTED_SPLITS[split]
    if name == "folder":
        base, found, samples, classes, list_id, list_sha = _load_folder(
            root, split, unknown_as_ignore
        )
    elif name in SPECS:
        spec = SPECS[name]
        base, found = find_layout(spec, split, root, layout)
        samples = list_samples(base, found, split)
        if not samples:
            raise DatasetError(
                f"{name}: no image/label pairs under {base} in layout {found.id!r}; "
                "check that image and label names match"
            )
        classes = load_class_list(spec.class_list, seen=seen_ids(spec.class_list, spec.num_classes))
        expected = spec.counts.get(split, ())
        count = len({s.key.split("/")[0] for s in samples}) if spec.video else len(samples)
        _check_count(name, split, count, expected, strict)
        list_id, list_sha = spec.class_list, class_list_sha256(spec.class_list)
    else:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    decode = LabelDecoder(found, len(classes), base, split, unknown_as_ignore)
    if restrict is not None:
        decode = _restricted(decode, classes, restrict, name)
        split = f"{split}_{restrict}"
    record = {
        "dataset": name,
        "split": split,
        "root": str(base.resolve()),
        "layout": found.id,
        "decoder": found.decoder if found.table is None else f"lut:{found.table}",
        "count": len(samples),
        "samples_sha256": samples_sha256(samples),
        "class_list": list_id,
        "class_list_sha256": list_sha,
        "ignore_index": ignore_value(len(classes)),
    }
    if unknown_as_ignore:  # it moves the numbers: on record only when used
        record["unknown_as_ignore"] = True
    video = name in SPECS and SPECS[name].video
    return SegmentationDataset(name, samples, classes, decode, record, video)
