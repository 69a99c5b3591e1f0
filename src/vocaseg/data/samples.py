"""Sample lists: probe a layout under a root and pair images with label files
(docs/datasets.md §1.3).

A layout's sample list comes from its split file when it has one (MMSeg), else from the label
files present, paired with images by stem (detectron2 ``load_sem_seg``). Video layouts list the
videos of the split file and pair frames inside each video folder, sorted by name. Probing only
reads folder listings; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vocaseg.constants import IMAGE_SUFFIXES
from vocaseg.data.layouts import Layout
from vocaseg.errors import DatasetError


@dataclass(frozen=True)
class Sample:
    """One image and its label file; ``key`` is the stem (``video/frame`` for videos)."""

    image: Path
    label: Path
    key: str


def _label_files(folder: Path, layout: Layout) -> list[Path]:
    """Label files of ``folder`` that belong to ``layout`` (suffix, not an excluded one)."""
    if not folder.is_dir():
        return []
    pattern = f"*{layout.label_suffix}"
    files = folder.rglob(pattern) if layout.recursive else folder.glob(pattern)
    return [p for p in files if not (layout.exclude and p.name.endswith(layout.exclude))]


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    files = folder.rglob("*") if recursive else folder.iterdir()
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]


def probe_parts(root: Path, layout: Layout, split: str) -> tuple[bool, bool]:
    """(images found, labels found) for ``layout`` under ``root``: non-empty folders of each."""
    if "{video}" in layout.images:
        images = root / layout.fill(layout.images.split("{video}")[0], split)
        labels = root / layout.fill(layout.labels.split("{video}")[0], split)
        return images.is_dir() and any(images.iterdir()), labels.is_dir()
    images = root / layout.fill(layout.images, split)
    labels = root / layout.fill(layout.labels, split)
    return bool(_image_files(images, layout.recursive)), bool(_label_files(labels, layout))


def probe(root: Path, layout: Layout, split: str) -> bool:
    """Whether ``layout`` has a non-empty image folder and label folder under ``root``."""
    return all(probe_parts(root, layout, split))


def _stem(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if suffix and name.endswith(suffix) else name


def _index_images(folder: Path, layout: Layout) -> dict[str, Path]:
    return {_stem(p.stem, layout.image_suffix): p for p in _image_files(folder, layout.recursive)}


def _index_labels(folder: Path, layout: Layout) -> dict[str, Path]:
    return {_stem(p.name, layout.label_suffix): p for p in _label_files(folder, layout)}


def _split_file(root: Path, layout: Layout, split: str) -> Path:
    candidates = [root / layout.fill(name, split) for name in layout.split_files]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(
        f"split file for split {split!r} not found; looked for "
        f"{', '.join(str(p) for p in candidates)}. Check --split, or rebuild it with "
        "'vocaseg datasets prepare'"
    )


def _read_lines(path: Path) -> list[str]:
    return [
        line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _pair(images: dict[str, Path], labels: dict[str, Path], prefix: str = "") -> list[Sample]:
    return [Sample(images[k], labels[k], prefix + k) for k in sorted(labels) if k in images]


def _video_frames(root: Path, layout: Layout, split: str, video: str) -> list[Sample]:
    images = _index_images(root / layout.fill(layout.images, split, video), layout)
    labels = _index_labels(root / layout.fill(layout.labels, split, video), layout)
    return _pair(images, labels, prefix=f"{video}/")


def _find_image(folder: Path, stem: str) -> Path | None:
    return next(
        (
            folder / f"{stem}{ext}"
            for suffix in IMAGE_SUFFIXES
            for ext in (suffix, suffix.upper())
            if (folder / f"{stem}{ext}").is_file()
        ),
        None,
    )


def list_samples(root: Path, layout: Layout, split: str) -> list[Sample]:
    """Image-label pairs of ``split`` under ``root``; a listed entry without its files is an error."""
    images_dir = root / layout.fill(layout.images, split)
    labels_dir = root / layout.fill(layout.labels, split)
    if not layout.split_files:
        return _pair(_index_images(images_dir, layout), _index_labels(labels_dir, layout))
    split_file = _split_file(root, layout, split)
    entries = _read_lines(split_file)
    samples: list[Sample] = []
    no_image: list[str] = []
    no_label: list[str] = []
    for entry in entries:
        if "{video}" in layout.images:
            frames = _video_frames(root, layout, split, entry)
            if not frames:
                no_label.append(str(root / layout.fill(layout.labels, split, entry)))
            samples.extend(frames)
            continue
        image = _find_image(images_dir, f"{entry}{layout.image_suffix}")
        label = labels_dir / f"{entry}{layout.label_suffix}"
        if image is None:
            no_image.append(str(images_dir / f"{entry}{layout.image_suffix}.*"))
        elif not label.is_file():
            no_label.append(str(label))
        else:
            samples.append(Sample(image, label, entry))
    if no_image or no_label:
        what = [
            f"{len(found)} {'has' if len(found) == 1 else 'have'} no {kind}, e.g. {found[0]}"
            for kind, found in (("image", no_image), ("label file", no_label))
            if found
        ]
        raise DatasetError(
            f"of the {len(entries)} entries of {split_file}, {' and '.join(what)}; re-extract "
            "the dataset or convert it with 'vocaseg datasets prepare'"
        )
    return samples
