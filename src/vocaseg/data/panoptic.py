"""COCO panoptic per-instance training targets and GKC's training sample (Han et al., "Global
Knowledge Calibration for Fast Open-Vocabulary Segmentation", ICCV 2023, implementation
details; Mask2Former's COCO panoptic recipe, Cheng et al., CVPR 2022, §4.1).

Reading needs no panopticapi: each PNG listed in ``annotations/panoptic_<split>.json`` is read as
RGB and segment id = R + 256·G + 256²·B (0 = void); the JSON's ``segments_info`` gives each
segment's ``category_id`` and ``iscrowd``; the class is the rank of ``category_id`` among the 133
sorted COCO panoptic ids. Targets are one binary mask + class per non-crowd segment, so crowd and
void pixels are negatives of every mask.

:func:`panoptic_training_sample` applies the training augmentation (flip p = 0.5; scale s ~ U(0.8,
1.2) fitting the image into (512·s)²; random 512² crop, bottom-right padding with grey 128 and
void) and cuts the distillation teacher's crops from the original, un-augmented image (outside the
mask painted grey 128, the mask's bounding box, bicubic 224×224 without keeping the aspect ratio,
CLIP normalisation). All randomness comes from a ``numpy.random.Generator``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vocaseg.clip.model import OPENAI_MEAN, OPENAI_STD
from vocaseg.data.classlists import load_ids
from vocaseg.data.datasets import find_layout
from vocaseg.data.imageio import read_image, read_label
from vocaseg.data.layouts import SPECS, Layout
from vocaseg.data.samples import Sample, list_samples
from vocaseg.errors import DatasetError

# Student input statistics on the 0-255 scale (ImageNet's, as the released GKC code uses)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
PAD_VALUE = 128  # grey: padding of the training crop and background of the teacher crops
VOID = 0  # segment id of unlabelled pixels


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG ``[H, W, 3]`` uint8 -> segment ids ``[H, W]`` int64 (R + 256·G + 256²·B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def coco_category_to_class() -> dict[int, int]:
    """COCO panoptic ``category_id`` -> class index 0..132 (rank among the sorted ids)."""
    return {category: index for index, category in enumerate(load_ids("coco_panoptic.ids"))}


def resolve_segments(
    segments: Sequence[dict], category_to_class: dict[int, int], path: str | Path
) -> list[dict[str, int]]:
    """``segments_info`` entries -> ``{"id", "category_id", "iscrowd", "class"}``; unknown
    categories raise DatasetError naming the file."""
    resolved = []
    for segment in segments:
        category = int(segment["category_id"])
        if category not in category_to_class:
            raise DatasetError(
                f"panoptic segment {segment['id']} of {path} has category_id {category}, which "
                "is not a COCO panoptic category; check the annotation JSON"
            )
        resolved.append(
            {
                "id": int(segment["id"]),
                "category_id": category,
                "iscrowd": int(segment.get("iscrowd", 0)),
                "class": category_to_class[category],
            }
        )
    return resolved


def instance_targets(
    segment_ids: np.ndarray, segments: Sequence[dict], keep_empty: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks ``[N, H, W]`` bool, classes ``[N]`` and segment ids ``[N]`` of the non-crowd segments
    (resolved as by :func:`resolve_segments`), in JSON order; segments with no pixel are dropped
    unless ``keep_empty``."""
    masks, classes, ids = [], [], []
    for segment in segments:
        if segment["iscrowd"]:
            continue
        mask = segment_ids == segment["id"]
        if keep_empty or mask.any():
            masks.append(mask)
            classes.append(segment["class"])
            ids.append(segment["id"])
    shape = (len(masks), *segment_ids.shape)
    stacked = np.stack(masks) if masks else np.zeros(shape, dtype=bool)
    return stacked, np.array(classes, dtype=np.int64), np.array(ids, dtype=np.int64)


class PanopticDataset(Sequence):
    """COCO panoptic samples: ``{"image": uint8 [H, W, 3], "segment_ids": int64 [H, W],
    "segments": [{"id", "category_id", "iscrowd", "class"}], "file_name", "image_id", "path"}``."""

    def __init__(
        self, samples: list[Sample], annotations: dict[str, dict], record: dict[str, Any]
    ) -> None:
        self.samples = samples
        self.annotations = annotations
        self.record = record
        self.category_to_class = coco_category_to_class()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sample = self.samples[index]
        annotation = self.annotations.get(sample.label.name)
        if annotation is None:
            raise DatasetError(f"{sample.label.name} has no entry in {self.record['json']}")
        image = read_image(sample.image)
        raw = read_label(sample.label)
        if raw.ndim != 3 or raw.shape[2] != 3:
            raise DatasetError(
                f"panoptic label {sample.label} is not an RGB PNG (shape {raw.shape})"
            )
        if raw.shape[:2] != image.shape[:2]:
            raise DatasetError(
                f"panoptic label {sample.label} is {raw.shape[1]}x{raw.shape[0]} but image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]}"
            )
        segments = resolve_segments(
            annotation["segments_info"], self.category_to_class, sample.label
        )
        return {
            "image": image,
            "segment_ids": rgb_to_segment_ids(raw),
            "segments": segments,
            "file_name": sample.label.name,
            "image_id": annotation.get("image_id"),
            "path": str(sample.image),
        }

    def __repr__(self) -> str:
        return f"PanopticDataset({self.record['split']!r}, {len(self)} samples)"


def _panoptic_layouts() -> tuple[Layout, ...]:
    return tuple(layout for layout in SPECS["coco_panoptic"].layouts if layout.panoptic_json)


def load_panoptic(
    root: str | os.PathLike | None = None, split: str = "train", layout: str | None = None
) -> PanopticDataset:
    """COCO panoptic ``split`` with per-segment annotations, found like
    ``load_dataset("coco_panoptic")`` (same roots; only the layouts with the PNG + JSON)."""
    spec = dataclasses.replace(SPECS["coco_panoptic"], layouts=_panoptic_layouts())
    base, found = find_layout(spec, split, root, layout)
    json_path = base / found.fill(found.panoptic_json, split)
    if not json_path.is_file():
        raise DatasetError(
            f"panoptic annotations {json_path} not found; the PNGs of COCO panoptic need the "
            "JSON of the same release (annotations/panoptic_<split>.json)"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        annotations = {a["file_name"]: a for a in data["annotations"]}
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(
            f"cannot read {json_path}: {err!r}; re-download the COCO panoptic annotations"
        ) from None
    samples = [s for s in list_samples(base, found, split) if s.label.name in annotations]
    if not samples:
        raise DatasetError(
            f"coco_panoptic: no image/PNG pairs listed in {json_path} under {base} "
            f"(layout {found.id!r}); check that image and PNG names match the JSON"
        )
    record = {
        "dataset": "coco_panoptic",
        "split": split,
        "root": str(base.resolve()),
        "layout": found.id,
        "json": str(json_path),
        "count": len(samples),
    }
    return PanopticDataset(samples, annotations, record)


def teacher_crop(image: np.ndarray, mask: np.ndarray, size: int = 224) -> Tensor:
    """CLIP input ``[3, size, size]`` of one segment: the mask's bounding box of ``image`` with
    everything outside the mask grey, resized bicubically to ``size``² (aspect not kept),
    CLIP-normalised. An empty mask gives a grey image."""
    if mask.any():
        rows, cols = np.nonzero(mask)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        inside = mask[top:bottom, left:right, None]
        patch = np.where(inside, image[top:bottom, left:right], PAD_VALUE).astype(np.uint8)
        pixels = Image.fromarray(patch).resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(pixels, dtype=np.float32) / 255.0  # [size, size, 3]
    else:
        array = np.full((size, size, 3), PAD_VALUE / 255.0, dtype=np.float32)
    mean, std = np.array(OPENAI_MEAN, np.float32), np.array(OPENAI_STD, np.float32)
    return torch.from_numpy((array - mean) / std).permute(2, 0, 1).contiguous()


def _resize(image: np.ndarray, ids: np.ndarray, size: tuple[int, int]):
    """Image bilinear, segment ids nearest (PIL, as detectron2's ResizeTransform); size (h, w)."""
    if image.shape[:2] == size:
        return image, ids
    height, width = size
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    ids_image = Image.fromarray(ids.astype(np.int32))  # mode "I"
    ids = np.asarray(ids_image.resize((width, height), Image.Resampling.NEAREST)).astype(np.int64)
    return image, ids


def augment(
    image: np.ndarray,
    segment_ids: np.ndarray,
    rng: np.random.Generator,
    crop: int = 512,
    scale_range: tuple[float, float] = (0.8, 1.2),
    flip_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Flip, scale-jitter, crop and pad: (image uint8 [crop, crop, 3], ids [crop, crop], (h, w) of
    the unpadded content). Draws, in order: flip, scale, crop offsets."""
    if rng.random() < flip_prob:
        image, segment_ids = image[:, ::-1], segment_ids[:, ::-1]
    scale = rng.uniform(*scale_range)
    height, width = segment_ids.shape
    factor = min(crop * scale / height, crop * scale / width)  # fit into (crop·s)²
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    image, segment_ids = _resize(np.ascontiguousarray(image), segment_ids, size)
    crop_h, crop_w = min(crop, size[0]), min(crop, size[1])
    top = int(rng.integers(0, size[0] - crop_h + 1))
    left = int(rng.integers(0, size[1] - crop_w + 1))
    out_image = np.full((crop, crop, 3), PAD_VALUE, dtype=np.uint8)
    out_ids = np.full((crop, crop), VOID, dtype=np.int64)
    out_image[:crop_h, :crop_w] = image[top : top + crop_h, left : left + crop_w]
    out_ids[:crop_h, :crop_w] = segment_ids[top : top + crop_h, left : left + crop_w]
    return out_image, out_ids, (crop_h, crop_w)


def normalize_image(image: np.ndarray) -> Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, H, W]`` with ImageNet statistics on the 0-255 scale."""
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy((image.astype(np.float32) - mean) / std).permute(2, 0, 1).contiguous()


def panoptic_training_sample(
    image: np.ndarray,
    segment_ids: np.ndarray,
    segments: Sequence[dict],
    rng: np.random.Generator,
    crop: int = 512,
    scale_range: tuple[float, float] = (0.8, 1.2),
    flip_prob: float = 0.5,
    teacher_size: int | None = 224,
    keep_empty_targets: bool = False,
) -> dict[str, Any]:
    """One GKC training sample from a :class:`PanopticDataset` item's image, ids and segments.

    Returns ``image`` [3, crop, crop] float (ImageNet-normalised), ``masks`` [N, crop, crop] bool,
    ``labels`` [N] long, ``segment_ids`` [N] long (the JSON ids, for per-instance synonym
    scores), ``teacher_crops`` [N, 3, teacher_size, teacher_size] float (absent when
    ``teacher_size`` is None) and ``valid_size`` (h, w) of the unpadded content. Targets are the
    non-crowd segments in JSON order; those the crop empties are dropped with their teacher crop
    unless ``keep_empty_targets``.
    """
    out_image, out_ids, valid = augment(image, segment_ids, rng, crop, scale_range, flip_prob)
    masks, labels, ids = instance_targets(out_ids, segments, keep_empty=keep_empty_targets)
    sample: dict[str, Any] = {
        "image": normalize_image(out_image),
        "masks": torch.from_numpy(masks),
        "labels": torch.from_numpy(labels),
        "segment_ids": torch.from_numpy(ids),
        "valid_size": valid,
    }
    if teacher_size is not None:
        crops = [teacher_crop(image, segment_ids == i, teacher_size) for i in ids.tolist()]
        empty = torch.zeros(0, 3, teacher_size, teacher_size)
        sample["teacher_crops"] = torch.stack(crops) if crops else empty
    return sample
