"""Training/test transforms: geometry shared by image and label, padding, crop rule, determinism."""

import numpy as np
import pytest
import torch

from vocaseg.data.transforms import (
    TrainTransform,
    hsv_to_rgb,
    photometric_distortion,
    rescale_size,
    rgb_to_hsv,
)

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def blocks_sample(height=48, width=80, block=8):
    """Label = class of 8x8 blocks; image = the class colour, so the label can be read off it."""
    yy, xx = np.mgrid[0:height, 0:width]
    label = ((yy // block) + 2 * (xx // block)) % 4
    return {"image": COLOURS[label], "label": label.astype(np.int64), "path": "x.png"}


def decode(image):
    """Class of each pixel from its (un-normalised) colour."""
    rgb = image.permute(1, 2, 0).numpy()
    return np.argmin(np.linalg.norm(rgb[:, :, None] - COLOURS[None, None], axis=-1), axis=-1)


@pytest.mark.parametrize("seed", range(4))
def test_label_stays_aligned_with_image(seed):
    t = TrainTransform(
        crop_size=32,
        scale=(80, 48),
        ratio_range=(0.5, 2.0),
        photometric=False,
        mean=MEAN,
        std=STD,
        cat_max_ratio=1.0,
    )
    out = t(blocks_sample(), np.random.default_rng(seed))
    image, label = out["image"], out["label"]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label.shape == (32, 32) and label.dtype == torch.int64
    assert out["path"] == "x.png"
    valid = label != 255
    # Away from block edges (bilinear blends colours there) image colour and label agree.
    inner = valid.numpy() & (image.amax(0) - image.amin(0) >= 200).numpy()
    agree = decode(image)[inner] == label.numpy()[inner]
    assert agree.mean() > 0.97


def test_padding_values_and_size():
    t = TrainTransform(
        crop_size=(40, 100),
        scale=(80, 48),
        ratio_range=None,
        flip_prob=0.0,
        photometric=False,
        cat_max_ratio=1.0,
        mean=(10.0, 10.0, 10.0),
        std=STD,
    )
    out = t(blocks_sample(), np.random.default_rng(0))
    # 48x80 fits the (80, 48) scale unchanged; the crop keeps 40 rows and all 80 columns.
    assert out["image"].shape == (3, 40, 100)
    assert torch.all(out["image"][:, :, 80:] == 0) and torch.all(out["label"][:, 80:] == 255)
    assert torch.all(out["label"][:, :80] != 255)


def test_crop_rule_avoids_dominant_class():
    # Class 1 fills all but a 10x10 corner of class 2; a 16x16 crop is mixed only near that corner.
    label = np.ones((64, 64), dtype=np.int64)
    label[:10, :10] = 2
    sample = {"image": COLOURS[label], "label": label}
    strict = TrainTransform(
        crop_size=16,
        scale=(64, 64),
        ratio_range=None,
        flip_prob=0.0,
        photometric=False,
        cat_max_ratio=0.75,
        crop_tries=1000,
    )
    loose = TrainTransform(
        crop_size=16,
        scale=(64, 64),
        ratio_range=None,
        flip_prob=0.0,
        photometric=False,
        cat_max_ratio=1.0,
    )
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(10):
        counts = np.bincount(strict({**sample}, rng_a)["label"].ravel(), minlength=3)
        assert counts.max() / counts.sum() < 0.75
    mixed = [len(np.unique(loose({**sample}, rng_b)["label"])) > 1 for _ in range(30)]
    assert not all(mixed)


def test_same_generator_state_same_output():
    t = TrainTransform(crop_size=24, scale=(80, 48))
    sample = blocks_sample()
    a = t(sample, np.random.default_rng(123))
    b = t(sample, np.random.default_rng(123))
    c = t(sample, np.random.default_rng(124))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])


def test_extra_label_keys_follow_geometry():
    sample = blocks_sample()
    sample["unmasked"] = sample["label"] + 10
    t = TrainTransform(crop_size=24, scale=(80, 48), label_keys=("label", "unmasked"))
    out = t(sample, np.random.default_rng(5))
    valid = out["label"] != 255
    assert torch.equal(out["unmasked"][valid], out["label"][valid] + 10)


def test_hsv_round_trip_and_photometric_range():
    rgb = np.random.default_rng(0).uniform(0, 255, size=(50, 3)).astype(np.float32)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-3)
    image = COLOURS[blocks_sample()["label"]]
    out = photometric_distortion(image, np.random.default_rng(3))
    assert out.dtype == np.uint8 and out.shape == image.shape


def test_rescale_size_keeps_ratio():
    assert rescale_size(500, 375, (2048, 512)) == (683, 512)
    assert rescale_size(100, 4000, (2048, 512)) == (51, 2048)
