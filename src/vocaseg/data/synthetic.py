"""Generated "shapes" segmentation datasets for tests, examples and quickstarts (no downloads).

Each foreground class is a shape of one kind (square, disc, triangle or bar, as the default names
say) in a distinct colour with a class-specific stripe texture, drawn over a noisy background
class 0, so that a small model can learn it and a colour lookup can nearly solve it. A 1-pixel
band around every shape is ignore (255), as in PASCAL VOC. ``make_shapes_dataset`` writes the
generic ``folder`` layout::

    root/images/<split>/<stem>.png   RGB
    root/masks/<split>/<stem>.png    uint8 class ids, 255 = ignore
    root/classes.txt                 one class per line

``ShapesDataset`` is the same data in memory, with the reader interface of ``vocaseg.data``.

``make_coco_panoptic_dataset`` writes the same kind of scenes as COCO panoptic 2017 (detectron2
layout: ``coco/<split>2017/*.jpg``, ``coco/panoptic_<split>2017/*.png`` with RGB-encoded segment
ids, ``coco/annotations/panoptic_<split>2017.json``): two stuff segments, thing instances (a class
may appear twice), sometimes a crowd segment, and a void band around every thing.

``make_image_folder`` writes unlabelled images (shapes on textured backgrounds) in ImageNet
class folders or flat, for label-free training (ZeroSeg).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vocaseg.data.classlists import load_class_list, load_ids
from vocaseg.io import atomic_open, atomic_path, write_json
from vocaseg.text.vocab import Vocabulary

DEFAULT_CLASSES = ("background", "red square", "green disc", "blue triangle", "yellow bar")
IGNORE_INDEX = 255

# Class colours (RGB); index 0 is the background's base colour.
PALETTE = np.array(
    [
        [90, 90, 90],
        [220, 40, 40],
        [40, 200, 60],
        [50, 70, 220],
        [230, 210, 40],
        [200, 60, 200],
        [40, 200, 210],
        [240, 140, 30],
        [140, 90, 40],
        [250, 250, 250],
    ],
    dtype=np.float32,
)


def class_colour(index: int) -> np.ndarray:
    """RGB colour of class ``index`` (float32 [3]); beyond the palette, a fixed pseudo-random one."""
    if index < len(PALETTE):
        return PALETTE[index]
    return np.random.default_rng(index).uniform(30, 230, size=3).astype(np.float32)


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean [size, size] mask of a random square (0), disc (1), triangle (2) or bar (3)."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    ry, rx = rng.uniform(0.12, 0.3, size=2) * size
    if kind == 3:  # a long, thin horizontal bar
        ry, rx = rng.uniform(0.04, 0.07) * size, rng.uniform(0.3, 0.45) * size
    if kind in (0, 3):
        return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    if kind == 1:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    # Triangle with apex on top: rows below the apex, half-width growing linearly.
    depth = (yy - (cy - ry)) / (2 * ry)
    return (depth >= 0) & (depth <= 1) & (np.abs(xx - cx) <= depth * rx)


def _ignore_band(label: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (the VOC-style void boundary)."""
    band = np.zeros(label.shape, dtype=bool)
    vertical = label[1:, :] != label[:-1, :]
    horizontal = label[:, 1:] != label[:, :-1]
    band[1:, :] |= vertical
    band[:-1, :] |= vertical
    band[:, 1:] |= horizontal
    band[:, :-1] |= horizontal
    return band


def make_shapes_sample(
    num_classes: int, size: int, rng: np.random.Generator, max_shapes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 [size, size, 3], label int64 [size, size]) pair with 1..max_shapes shapes."""
    label = np.zeros((size, size), dtype=np.int64)
    count = int(rng.integers(1, max_shapes + 1))
    for cls in rng.choice(
        np.arange(1, num_classes), size=min(count, num_classes - 1), replace=False
    ):
        label[_shape_mask((int(cls) - 1) % 4, size, rng)] = cls  # kinds follow the class names
    # Texture: class-specific stripe period, so colour and pattern both identify a class.
    yy, xx = np.mgrid[0:size, 0:size]
    period = 3 + label % 4
    stripes = ((xx + yy) // period) % 2 == 0
    colours = np.stack([class_colour(c) for c in range(num_classes)])[label]  # [size, size, 3]
    image = colours + np.where(stripes, 12.0, -12.0)[..., None]
    image += rng.normal(0.0, 6.0, size=image.shape)
    label[_ignore_band(label)] = IGNORE_INDEX
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


class ShapesDataset:
    """In-memory shapes dataset with the reader interface of ``vocaseg.data`` datasets.

    Items are ``{"image": uint8 [H, W, 3], "label": int64 [H, W], "path": str}``.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        num_images: int,
        size: int = 64,
        classes: Sequence[str] = DEFAULT_CLASSES,
        seed: int = 0,
        split: str = "train",
        seen: Sequence[int] | None = None,
    ) -> None:
        if len(classes) < 2:
            raise ValueError("a shapes dataset needs a background and at least one shape class")
        self.class_names = list(classes)
        self.seen = tuple(seen) if seen is not None else None
        self.classes = Vocabulary.from_names(self.class_names, seen=self.seen)
        self.split = split
        rng = np.random.default_rng(seed)
        self.samples = [make_shapes_sample(len(classes), size, rng) for _ in range(num_images)]
        self.record = {
            "id": "shapes",
            "split": split,
            "count": num_images,
            "size": size,
            "seed": seed,
            "num_classes": len(classes),
        }

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.samples[index]
        return {"image": image.copy(), "label": label.copy(), "path": f"shapes_{index:05d}.png"}


def make_shapes_dataset(
    root: str | Path,
    num_images: int,
    size: int = 64,
    classes: Sequence[str] = DEFAULT_CLASSES,
    seed: int = 0,
    split: str = "train",
) -> Path:
    """Write a shapes dataset in the ``folder`` layout under ``root``; returns ``root``.

    Several splits can share one root (call once per split with different seeds).
    """
    root = Path(root)
    data = ShapesDataset(num_images, size, classes, seed, split)
    for index, (image, label) in enumerate(data.samples):
        stem = f"{split}_{index:05d}"
        for folder, array in (("images", image), ("masks", label.astype(np.uint8))):
            target = root / folder / split / f"{stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                Image.fromarray(array).save(tmp, format="PNG")
    with atomic_open(root / "classes.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(data.class_names) + "\n")
    return root


# COCO panoptic category ids used by make_coco_panoptic_dataset
PANOPTIC_THINGS = (1, 3, 18, 44)  # person, car, dog, bottle
PANOPTIC_STUFF = (187, 193)  # sky-other-merged (top), grass-merged (bottom)


def _panoptic_scene(
    size: int, rng: np.random.Generator, ranks: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(image uint8 [size, size, 3], segment ids [size, size], segments_info) of one scene."""
    ids = np.zeros((size, size), dtype=np.int64)
    classes = np.zeros((size, size), dtype=np.int64)
    used = rng.choice(np.arange(1, 2**24), size=8, replace=False).tolist()  # COCO-like ids
    segments = []
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    for category, rows in zip(PANOPTIC_STUFF, (slice(0, horizon), slice(horizon, size))):
        ids[rows] = used[len(segments)]
        classes[rows] = ranks[category]
        segments.append({"id": used[len(segments)], "category_id": category, "iscrowd": 0})
    things = rng.choice(PANOPTIC_THINGS, size=int(rng.integers(1, 4)), replace=True)
    crowd = rng.random() < 0.4
    band = np.zeros((size, size), dtype=bool)
    for index, category in enumerate(things.tolist()):
        mask = _shape_mask(PANOPTIC_THINGS.index(category), size, rng)
        ids[mask] = used[len(segments)]
        classes[mask] = ranks[category]
        is_crowd = int(crowd and index == len(things) - 1)
        segments.append({"id": used[len(segments)], "category_id": category, "iscrowd": is_crowd})
        band |= _ignore_band(mask.astype(np.int64))
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = ((xx + yy) // (3 + classes % 4)) % 2 == 0
    image = np.stack([class_colour(c) for c in range(max(ranks.values()) + 1)])[classes]
    image = image + np.where(stripes, 12.0, -12.0)[..., None] + rng.normal(0, 6.0, image.shape)
    ids[band] = 0  # void boundary
    present = set(np.unique(ids).tolist())
    for segment in segments:
        mask = ids == segment["id"]
        rows, cols = np.nonzero(mask)
        segment["area"] = int(mask.sum())
        segment["bbox"] = (
            [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1]
            if segment["id"] in present
            else [0, 0, 0, 0]
        )
    segments = [s for s in segments if s["id"] in present]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), ids, segments


def make_coco_panoptic_dataset(
    root: str | Path,
    num_images: int,
    size: int = 64,
    seed: int = 0,
    split: str = "train",
    image_ext: str = ".jpg",
) -> Path:
    """Write a tiny COCO-panoptic-layout dataset of ``split`` ("train" or "val") under ``root``.

    ``image_ext`` ".png" keeps the pixels exact (COCO itself ships JPEGs). Returns ``root``.
    """
    root = Path(root)
    folder = f"{split}2017"
    categories = load_ids("coco_panoptic.ids")
    names = load_class_list("coco_panoptic").class_names
    ranks = {category: rank for rank, category in enumerate(categories)}
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for index in range(num_images):
        image, ids, segments = _panoptic_scene(size, rng, ranks)
        stem = f"{index + 1:012d}"
        colour = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        for target, array in (
            (root / "coco" / folder / f"{stem}{image_ext}", image),
            (root / "coco" / f"panoptic_{folder}" / f"{stem}.png", colour),
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                Image.fromarray(array).save(tmp, format="PNG" if target.suffix == ".png" else None)
        images.append({"id": index + 1, "file_name": f"{stem}{image_ext}", "height": size,
                       "width": size})  # fmt: skip
        annotations.append(
            {"image_id": index + 1, "file_name": f"{stem}.png", "segments_info": segments}
        )
    write_json(
        root / "coco" / "annotations" / f"panoptic_{folder}.json",
        {
            "images": images,
            "annotations": annotations,
            "categories": [
                {"id": c, "name": n, "isthing": int(c < 92)} for c, n in zip(categories, names)
            ],
        },
    )


def make_coco_captions(root: str | Path, split: str = "train", per_image: int = 2) -> Path:
    """Write ``coco/annotations/captions_{split}2017.json`` (the official COCO captions format) for
    the generated panoptic data of ``split`` under ``root``: ``per_image`` captions per image, each
    naming the image's classes ("a photo of sky, grass and dog"). Returns the file."""
    root = Path(root)
    panoptic = json.loads(
        (root / "coco" / "annotations" / f"panoptic_{split}2017.json").read_text(encoding="utf-8")
    )
    names = {c["id"]: c["name"].replace("-merged", "").replace("-other", "").replace("-", " ")
             for c in panoptic["categories"]}  # fmt: skip
    annotations = []
    for record in panoptic["annotations"]:
        present = list(dict.fromkeys(names[s["category_id"]] for s in record["segments_info"]))
        for k in range(per_image if present else 0):
            order = present[k % len(present) :] + present[: k % len(present)]
            text = ", ".join(order[:-1]) + (" and " if len(order) > 1 else "") + order[-1]
            annotations.append({"image_id": record["image_id"], "id": len(annotations) + 1,
                                "caption": f"a photo of {text}"})  # fmt: skip
    path = root / "coco" / "annotations" / f"captions_{split}2017.json"
    write_json(path, {"images": panoptic["images"], "annotations": annotations})
    return path


def make_image_sample(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An unlabelled uint8 [height, width, 3] image: 1-4 coloured shapes on a textured background
    (a random colour with a stripe pattern and noise)."""
    side = max(height, width)
    yy, xx = np.mgrid[0:side, 0:side]
    period = int(rng.integers(3, 9))
    stripes = ((xx * rng.integers(0, 2) + yy) // period) % 2 == 0
    image = rng.uniform(40, 200, size=3) + np.where(stripes, 15.0, -15.0)[..., None]
    image = np.broadcast_to(image, (side, side, 3)).copy()
    for _ in range(int(rng.integers(1, 5))):
        mask = _shape_mask(int(rng.integers(0, 4)), side, rng)
        image[mask] = class_colour(int(rng.integers(1, len(PALETTE))))
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(np.rint(image[:height, :width]), 0, 255).astype(np.uint8)


def make_image_folder(
    root: str | Path,
    num_images: int,
    sizes: Sequence[tuple[int, int]] = ((64, 80), (80, 64), (72, 72)),
    layout: str = "imagenet",
    seed: int = 0,
) -> Path:
    """Write ``num_images`` unlabelled images under ``root``; returns ``root``.

    ``layout="imagenet"``: three class folders ``n0000000k/`` of ``.JPEG`` files (ImageNet's
    upper-case suffix); ``"flat"``: ``.jpg`` and ``.png`` files side by side. Image i has size
    ``sizes[i % len(sizes)]`` (height, width).
    """
    if layout not in ("imagenet", "flat"):
        raise ValueError(f"layout must be 'imagenet' or 'flat', got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        image = make_image_sample(*sizes[index % len(sizes)], rng)
        if layout == "imagenet":
            target = root / f"n{index % 3:08d}" / f"img_{index:05d}.JPEG"
        else:
            target = root / f"img_{index:05d}.{('jpg', 'png')[index % 2]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG" if target.suffix != ".png" else "PNG")
    return root
