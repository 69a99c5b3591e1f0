"""COCO panoptic instance targets: PNG + JSON round trip with crowd and void, layouts and errors,
the synthetic generator, the training augmentation and the teacher crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vocaseg.clip.model import OPENAI_MEAN, OPENAI_STD
from vocaseg.data.panoptic import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment,
    instance_targets,
    load_panoptic,
    panoptic_training_sample,
    teacher_crop,
)
from vocaseg.data.synthetic import make_coco_panoptic_dataset
from vocaseg.errors import DatasetError

PERSON, CAR, WALL = 1, 3, 199  # COCO category ids -> classes 0, 2, 131


def write_panoptic(root, ids, segments, image=None, split="train2017", layout="d2"):
    """One image + RGB-id PNG + JSON at the paths of the COCO release (spelled out here)."""
    labels = {"d2": f"coco/panoptic_{split}", "mmdet": f"coco/annotations/panoptic_{split}"}[layout]
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
    colour = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    for path, array in ((root / f"coco/{split}/000000000042.png", image),
                        (root / labels / "000000000042.png", colour)):  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
    annotation = {"image_id": 42, "file_name": "000000000042.png", "segments_info": segments}
    path = root / f"coco/annotations/panoptic_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"annotations": [annotation], "categories": []}))
    return image


def scene():
    ids = np.zeros((6, 8), dtype=np.int64)  # 0 = void
    ids[:2] = 70000  # wall, id needs the blue channel
    ids[2:4, :4] = 3 + 256 * 7  # person
    ids[2:4, 4:] = 12  # crowd car
    ids[4:, :3] = 500  # car
    ids[5, 7] = 999  # an id the JSON does not list: void
    segments = [
        {"id": 70000, "category_id": WALL, "iscrowd": 0},
        {"id": 3 + 256 * 7, "category_id": PERSON, "iscrowd": 0},
        {"id": 12, "category_id": CAR, "iscrowd": 1},
        {"id": 500, "category_id": CAR, "iscrowd": 0},
    ]
    return ids, segments


def test_round_trip_with_crowd_and_void(tmp_path):
    ids, segments = scene()
    image = write_panoptic(tmp_path, ids, segments)
    data = load_panoptic(tmp_path, split="train")
    assert len(data) == 1 and data.record["layout"] == "d2"
    item = data[0]
    np.testing.assert_array_equal(item["image"], image)
    np.testing.assert_array_equal(item["segment_ids"], ids)
    assert item["image_id"] == 42 and item["file_name"] == "000000000042.png"
    assert [s["class"] for s in item["segments"]] == [131, 0, 2, 2]
    masks, labels, kept = instance_targets(item["segment_ids"], item["segments"])
    assert labels.tolist() == [131, 0, 2] and kept.tolist() == [70000, 3 + 256 * 7, 500]
    for mask, segment_id in zip(masks, kept):
        np.testing.assert_array_equal(mask, ids == segment_id)
    negatives = (ids == 0) | (ids == 12) | (ids == 999)  # void, crowd, unlisted
    assert not masks[:, negatives].any()


def test_mmdet_layout_and_split_names(tmp_path):
    ids, segments = scene()
    write_panoptic(tmp_path, ids, segments, split="val2017", layout="mmdet")
    data = load_panoptic(tmp_path, split="val")
    assert data.record["layout"] == "mmdet" and len(data) == 1


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_panoptic(tmp_path / "nothing", split="train")
    ids, segments = scene()
    write_panoptic(tmp_path, ids, [*segments, {"id": 7, "category_id": 12, "iscrowd": 0}])
    with pytest.raises(DatasetError, match="category_id 12"):
        load_panoptic(tmp_path, split="train")[0]
    (tmp_path / "coco/annotations/panoptic_train2017.json").unlink()
    with pytest.raises(DatasetError, match=r"panoptic_train2017\.json not found"):
        load_panoptic(tmp_path, split="train")


def test_synthetic_generator_round_trips(tmp_path):
    make_coco_panoptic_dataset(tmp_path, 6, size=40, seed=1, image_ext=".png")
    data = load_panoptic(tmp_path, split="train")
    assert len(data) == 6
    annotations = json.loads((tmp_path / "coco/annotations/panoptic_train2017.json").read_text())
    assert len(annotations["categories"]) == 133 and len(annotations["images"]) == 6
    crowd = 0
    for item, annotation in zip(data, annotations["annotations"]):
        present = set(np.unique(item["segment_ids"]).tolist())
        listed = {s["id"] for s in item["segments"]}
        assert listed <= present and present - listed <= {0}  # only void is unlisted
        assert (item["segment_ids"] == 0).any()  # a void band around the things
        crowd += sum(s["iscrowd"] for s in item["segments"])
        for segment in annotation["segments_info"]:
            assert segment["area"] == (item["segment_ids"] == segment["id"]).sum() > 0
    assert crowd > 0


def synthetic_item(tmp_path, index=0, size=48):
    make_coco_panoptic_dataset(tmp_path, 3, size=size, seed=2, image_ext=".png")
    return load_panoptic(tmp_path, split="train")[index]


def test_identity_augmentation_keeps_pixels_and_masks(tmp_path):
    item = synthetic_item(tmp_path)
    out = panoptic_training_sample(item["image"], item["segment_ids"], item["segments"],
                                   np.random.default_rng(0), crop=48, scale_range=(1.0, 1.0),
                                   flip_prob=0.0)  # fmt: skip
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    restored = out["image"].permute(1, 2, 0) * std + mean
    torch.testing.assert_close(restored, torch.tensor(item["image"]).float(), atol=1e-3, rtol=0)
    masks, labels, ids = instance_targets(item["segment_ids"], item["segments"])
    assert torch.equal(out["masks"], torch.from_numpy(masks))
    assert out["labels"].tolist() == labels.tolist() and out["segment_ids"].tolist() == ids.tolist()
    assert out["valid_size"] == (48, 48) and out["teacher_crops"].shape == (len(ids), 3, 224, 224)


def test_flip_mirrors_masks(tmp_path):
    item = synthetic_item(tmp_path)
    out = panoptic_training_sample(item["image"], item["segment_ids"], item["segments"],
                                   np.random.default_rng(0), crop=48, scale_range=(1.0, 1.0),
                                   flip_prob=1.0, teacher_size=None)  # fmt: skip
    masks, _, _ = instance_targets(item["segment_ids"][:, ::-1], item["segments"])
    assert torch.equal(out["masks"], torch.from_numpy(masks)) and "teacher_crops" not in out


def test_masks_labels_and_teacher_crops_stay_consistent(tmp_path):
    item = synthetic_item(tmp_path, index=1)
    for seed in range(4):
        out = panoptic_training_sample(item["image"], item["segment_ids"], item["segments"],
                                       np.random.default_rng(seed), crop=32,
                                       teacher_size=24)  # fmt: skip
        _, out_ids, _ = augment(item["image"], item["segment_ids"], np.random.default_rng(seed),
                                crop=32)  # fmt: skip
        classes = {s["id"]: s["class"] for s in item["segments"]}
        for n, segment_id in enumerate(out["segment_ids"].tolist()):
            assert torch.equal(out["masks"][n], torch.from_numpy(out_ids == segment_id))
            assert out["masks"][n].any() and out["labels"][n] == classes[segment_id]
            expected = teacher_crop(item["image"], item["segment_ids"] == segment_id, 24)
            torch.testing.assert_close(out["teacher_crops"][n], expected)


def test_segments_emptied_by_the_crop_are_dropped(tmp_path):
    ids = np.full((40, 40), 1, dtype=np.int64)
    ids[:4, :4] = 2  # top-left corner
    ids[-4:, -4:] = 3  # bottom-right corner: no 32² crop of the 80² rescale holds both
    segments = [{"id": i, "category_id": c, "iscrowd": 0, "class": k}
                for i, c, k in ((1, WALL, 131), (2, PERSON, 0), (3, CAR, 2))]  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for seed in range(3):
        kwargs = {"crop": 32, "scale_range": (2.0, 2.0), "teacher_size": 16}
        out = panoptic_training_sample(image, ids, segments, np.random.default_rng(seed), **kwargs)
        assert len(out["labels"]) < 3 and out["masks"].flatten(1).any(1).all()
        assert len(out["teacher_crops"]) == len(out["labels"]) == len(out["segment_ids"])
        kept = panoptic_training_sample(image, ids, segments, np.random.default_rng(seed),
                                        keep_empty_targets=True, **kwargs)  # fmt: skip
        assert kept["segment_ids"].tolist() == [1, 2, 3] and len(kept["teacher_crops"]) == 3


def test_padding_is_grey_and_void(tmp_path):
    ids = np.ones((20, 40), dtype=np.int64)
    segments = [{"id": 1, "category_id": WALL, "iscrowd": 0, "class": 131}]
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    out = panoptic_training_sample(image, ids, segments, np.random.default_rng(0), crop=32,
                                   scale_range=(1.0, 1.0), flip_prob=0.0)  # fmt: skip
    assert out["valid_size"] == (16, 32)
    grey = (128 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out["image"][:, 16:], grey[:, None, None].expand(3, 16, 32))
    assert out["masks"][0, :16].all() and not out["masks"][0, 16:].any()


def test_randomness_only_from_the_generator(tmp_path):
    item = synthetic_item(tmp_path)
    runs = []
    for global_seed in (0, 1):
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        runs.append(panoptic_training_sample(item["image"], item["segment_ids"], item["segments"],
                                             np.random.default_rng(5), crop=32, teacher_size=8))  # fmt: skip
    for key in ("image", "masks", "labels", "teacher_crops"):
        assert torch.equal(runs[0][key], runs[1][key])


def test_teacher_crop_by_hand():
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:11] = True  # bounding box rows 2..4, cols 3..10
    mask[2, 3] = False  # a pixel inside the box but outside the mask
    box = image[2:5, 3:11].copy()
    box[0, 0] = 128
    expected = np.asarray(Image.fromarray(box).resize((20, 20), Image.Resampling.BICUBIC))
    expected = (expected / 255.0 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    crop = teacher_crop(image, mask, size=20)
    assert crop.shape == (3, 20, 20)
    np.testing.assert_allclose(crop.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    grey = teacher_crop(image, np.zeros_like(mask), size=4)
    expected_grey = (128 / 255 - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)
    np.testing.assert_allclose(grey[:, 0, 0].numpy(), expected_grey, atol=1e-6)
