"""Synthetic shapes datasets: layout on disk, label values, determinism."""

import numpy as np
from PIL import Image

from vocaseg.data.synthetic import DEFAULT_CLASSES, ShapesDataset, make_shapes_dataset


def test_in_memory_dataset_interface_and_values():
    data = ShapesDataset(4, size=48, seed=1)
    assert len(data) == 4 and data.class_names == list(DEFAULT_CLASSES)
    assert data.classes.class_names == list(DEFAULT_CLASSES) and data.ignore_index == 255
    item = data[0]
    assert item["image"].shape == (48, 48, 3) and item["image"].dtype == np.uint8
    assert item["label"].shape == (48, 48) and item["label"].dtype == np.int64
    values = set(np.unique(np.concatenate([data[i]["label"].ravel() for i in range(4)])).tolist())
    assert values <= set(range(len(DEFAULT_CLASSES))) | {255}
    assert 0 in values and 255 in values and len(values - {0, 255}) >= 1


def test_classes_are_separable_by_colour():
    data = ShapesDataset(6, size=48, seed=2)
    means = {}
    for i in range(len(data)):
        item = data[i]
        for c in np.unique(item["label"]):
            if c != 255:
                means.setdefault(int(c), []).append(item["image"][item["label"] == c].mean(0))
    centres = np.stack([np.mean(v, 0) for v in means.values()])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    assert gaps[~np.eye(len(centres), dtype=bool)].min() > 40


def test_same_seed_same_data():
    a, b = ShapesDataset(2, seed=5), ShapesDataset(2, seed=5)
    assert np.array_equal(a[1]["image"], b[1]["image"])
    assert not np.array_equal(a[1]["image"], ShapesDataset(2, seed=6)[1]["image"])


def test_folder_layout_round_trip(tmp_path):
    root = make_shapes_dataset(tmp_path / "shapes", 3, size=32, seed=3, split="val")
    images = sorted((root / "images" / "val").glob("*.png"))
    masks = sorted((root / "masks" / "val").glob("*.png"))
    assert [p.stem for p in images] == [p.stem for p in masks] and len(images) == 3
    assert (root / "classes.txt").read_text().splitlines() == list(DEFAULT_CLASSES)
    expected = ShapesDataset(3, size=32, seed=3)
    label = np.array(Image.open(masks[0]))
    assert label.dtype == np.uint8 and np.array_equal(label, expected[0]["label"])
    assert np.array_equal(np.array(Image.open(images[0]).convert("RGB")), expected[0]["image"])
