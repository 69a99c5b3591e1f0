"""Writers of tiny fake datasets in the on-disk layouts of docs/datasets.md §2.

Paths are spelled out here from that page (not taken from ``vocaseg.data.layouts``), so the tests
check the reader against the documented layouts. Images are PNG unless a test asks for JPEG, so
pixels compare exactly.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [64] * (256 * 3 - 12)


def rgb(height: int = 8, width: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def save_label(path: Path, label: np.ndarray, palette: bool = False) -> None:
    """uint8 -> 8-bit PNG (palette mode when asked, like VOC), uint16 -> 16-bit PNG/TIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label)
    if palette:
        image.putpalette(VOC_PALETTE)  # L -> P, indices kept
    image.save(path)


def write_pairs(
    root: Path,
    images: str,
    labels: str,
    label_arrays: dict[str, np.ndarray],
    label_suffix: str = ".png",
    image_suffix: str = "",
    image_ext: str = ".png",
    split_file: str | None = None,
    palette: bool = False,
) -> dict[str, np.ndarray]:
    """Write one image per label (same size) and optionally a split file; returns the images."""
    written = {}
    for index, (stem, label) in enumerate(label_arrays.items()):
        image = rgb(label.shape[0], label.shape[1], seed=index)
        save_image(root / images / f"{stem}{image_suffix}{image_ext}", image)
        save_label(root / labels / f"{stem}{label_suffix}", label, palette=palette)
        written[stem] = image
    if split_file is not None:
        (root / split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / split_file).write_text("".join(f"{s}\n" for s in label_arrays))
    return written


def label(values: list[int], height: int = 8, width: int = 12, dtype=np.uint8) -> np.ndarray:
    """A label whose rows cycle through ``values`` (each value present)."""
    rows = np.array(values, dtype=dtype)[np.arange(height) % len(values)]
    return np.repeat(rows[:, None], width, axis=1)


def write_voc_mmseg(root: Path, labels: dict[str, np.ndarray], split: str = "val") -> dict:
    voc = "VOCdevkit/VOC2012"
    return write_pairs(
        root, f"{voc}/JPEGImages", f"{voc}/SegmentationClass", labels,
        split_file=f"{voc}/ImageSets/Segmentation/{split}.txt", palette=True,
    )  # fmt: skip


def write_coco_panoptic(root: Path, segment_maps: dict[str, tuple[np.ndarray, list[dict]]]):
    """``coco/panoptic_val2017/*.png`` (RGB ids) + ``coco/annotations/panoptic_val2017.json``."""
    annotations = []
    for index, (stem, (ids, segments)) in enumerate(segment_maps.items()):
        colour = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        save_image(root / "coco/val2017" / f"{stem}.jpg", rgb(*ids.shape, seed=index))
        save_image(root / "coco/panoptic_val2017" / f"{stem}.png", colour)
        annotations.append(
            {"file_name": f"{stem}.png", "image_id": index, "segments_info": segments}
        )
    path = root / "coco/annotations/panoptic_val2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"annotations": annotations, "categories": []}))


def write_video(
    root: Path, images: str, labels: str, split_file: str, videos: dict[str, list[np.ndarray]]
) -> None:
    """Frames ``<images>/<video>/<frame>.jpg`` + masks, and the split file of video ids."""
    for video, frames in videos.items():
        for index, mask in enumerate(frames):
            name = f"{index:05d}"
            save_image(root / images.format(video=video) / f"{name}.jpg", rgb(*mask.shape, index))
            save_label(root / labels.format(video=video) / f"{name}.png", mask)
    (root / split_file).parent.mkdir(parents=True, exist_ok=True)
    (root / split_file).write_text("".join(f"{v}\n" for v in videos))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds none (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
