"""ADE20K-Full (847 classes) from the ``ADE20K_2021_17_01`` release (docs/datasets.md §2.7, §6.3).

Follows the detectron2-family ``prepare_ade20k_full`` recipe: keep ``ADE_*.jpg`` files whose
name's second ``_`` field is ``val`` (validation) or ``train`` (training); class = ⌊R/10⌋·256 + G
of ``*_seg.png``; map ADE ids with the 847-row table (``ade847.ids``, trainId = row), others ->
65535; short side > 512 -> 512 with the long side rounded (image bilinear, label nearest, both
with OpenCV's pixel conventions); label -> uint16 TIFF; every image re-saved as JPEG at PIL's
default quality, as the reference does. Files are found by walking ``images/`` rather than by
unpickling ``index_ade20k.pkl``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from vocaseg.data.classlists import load_ids
from vocaseg.data.imageio import read_image, read_label, write_image, write_label
from vocaseg.data.prepare.common import Report, find_folder
from vocaseg.errors import DatasetError

SPLITS = {"val": ("validation", 2000), "train": ("training", 25574)}
MAX_SHORT_SIDE = 512


def ade_class_mask(seg_rgb: np.ndarray) -> np.ndarray:
    """``*_seg.png`` ``[H, W, 3]`` -> ADE object class id ``[H, W]`` (int64)."""
    r, g = seg_rgb[..., 0].astype(np.int64), seg_rgb[..., 1].astype(np.int64)
    return r // 10 * 256 + g


def ade847_lut() -> np.ndarray:
    """ADE class id -> trainId (row of ``ade847.ids``), every other id -> 65535."""
    ids = load_ids("ade847.ids")
    lut = np.full(max(ids) + 1, 65535, dtype=np.uint16)
    lut[ids] = np.arange(len(ids), dtype=np.uint16)
    return lut


def target_size(height: int, width: int, max_size: int = MAX_SHORT_SIDE) -> tuple[int, int]:
    """(h, w) after the short-side rule: only images whose short side exceeds ``max_size``."""
    if width >= height > max_size:
        return max_size, round(width / height * max_size)
    if height >= width > max_size:
        return round(height / width * max_size), max_size
    return height, width


def resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV INTER_NEAREST: source index = floor(dst_index * src / dst)."""
    rows = np.minimum(np.floor(np.arange(height) * (label.shape[0] / height)).astype(int),
                      label.shape[0] - 1)  # fmt: skip
    cols = np.minimum(np.floor(np.arange(width) * (label.shape[1] / width)).astype(int),
                      label.shape[1] - 1)  # fmt: skip
    return label[rows[:, None], cols[None, :]]


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centred bilinear taps (OpenCV INTER_LINEAR): lower index, upper, weight."""
    pos = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0, src - 1)
    low = np.floor(pos).astype(int)
    return low, np.minimum(low + 1, src - 1), pos - low


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of uint8 ``[H, W, 3]`` without antialiasing, as OpenCV does."""
    r0, r1, wr = _linear_taps(image.shape[0], height)
    c0, c1, wc = _linear_taps(image.shape[1], width)
    x = image.astype(np.float64)
    rows = x[r0] * (1 - wr)[:, None, None] + x[r1] * wr[:, None, None]  # [h, W, 3]
    out = rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]  # [h, w, 3]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def convert_ade847(root: Path, dst: Path) -> Report:
    images_root = find_folder(root, "images", "expected ADE20K_2021_17_01/images")
    out_root = dst / "ADE20K_2021_17_01"
    lut = ade847_lut()
    report = Report("ade847", dst)
    by_split: dict[str, list[Path]] = {split: [] for split in SPLITS}
    for path in sorted(images_root.rglob("ADE_*.jpg")):
        field = path.name.split("_")[1]
        if field in by_split:
            by_split[field].append(path)
    if not any(by_split.values()):
        raise DatasetError(f"no ADE_*.jpg images under {images_root}")
    for split, paths in by_split.items():
        folder, expected = SPLITS[split]
        written = 0
        for path in tqdm(paths, desc=f"ade847 {folder}", unit="image"):
            seg = path.with_name(path.stem + "_seg.png")
            if not seg.is_file():
                report.missing.append(str(seg))
                continue
            image = read_image(path, exif_transpose=False)  # as stored, like the _seg.png
            classes = ade_class_mask(read_label(seg))
            label = np.where(classes < len(lut), lut[np.minimum(classes, len(lut) - 1)], 65535)
            height, width = target_size(*image.shape[:2])
            if (height, width) != image.shape[:2]:
                image = resize_bilinear(image, height, width)
                label = resize_nearest(label, height, width)
            write_image(out_root / "images_detectron2" / folder / path.name, image)
            write_label(out_root / "annotations_detectron2" / folder / f"{path.stem}.tif",
                        label.astype(np.uint16))  # fmt: skip
            written += 1
        report.counts[folder] = written
        report.expected[folder] = expected
    report.notes.append("images re-saved as JPEG at PIL's default quality (as the reference)")
    return report
