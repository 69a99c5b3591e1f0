"""Label-free image-folder source: discovery, crop and normalisation, unreadable images skipped
with a count; and the synthetic unlabelled-image generator."""

import numpy as np
import pytest
import torch
from PIL import Image

from vocaseg.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderSource, list_images
from vocaseg.data.synthetic import make_image_folder
from vocaseg.errors import DatasetError

RNG = np.random.default_rng(0)


def test_lists_images_recursively_any_case(tmp_path):
    make_image_folder(tmp_path, 6, layout="imagenet")
    make_image_folder(tmp_path / "flat", 2, layout="flat")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "UPPER.PNG")
    paths = list_images(tmp_path)
    assert len(paths) == 9
    assert paths == sorted(paths)
    assert "n00000001/img_00001.JPEG" in paths and "flat/img_00001.png" in paths
    assert "UPPER.PNG" in paths and not any(".hidden" in p for p in paths)


def test_sample_is_centre_crop_with_imagenet_normalisation(tmp_path):
    # A 40x80 image whose columns encode their index: the centre crop keeps columns 20..59.
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[..., 0] = np.arange(80, dtype=np.uint8)[None] * 3
    Image.fromarray(image).save(tmp_path / "a.png")
    source = ImageFolderSource(tmp_path, size=40)
    out = source.sample(0, RNG)
    assert out["image"].shape == (3, 40, 40) and out["path"] == "a.png" and out["skipped"] == 0
    pixels = out["image"] * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(
        IMAGENET_MEAN
    ).view(3, 1, 1)
    pixels = (pixels * 255).round()
    assert pixels[0, 0, 0].item() == 60 and pixels[0, 0, -1].item() == 59 * 3


def test_shorter_side_resize_and_crop_pct(tmp_path):
    make_image_folder(tmp_path, 3, sizes=((64, 96),))
    source = ImageFolderSource(tmp_path, size=32, crop_pct=0.5, teacher_crop="native")
    out = source.sample(0, RNG)
    assert out["image"].shape == (3, 32, 32)
    assert tuple(out["teacher_image"].shape) == (3, 32, 32)  # half of the 64-px shorter side
    student = ImageFolderSource(tmp_path, size=32, teacher_crop="student").sample(1, RNG)
    assert student["teacher_image"].dtype == torch.uint8
    assert tuple(student["teacher_image"].shape) == (3, 32, 32)


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    make_image_folder(tmp_path, 4, layout="flat")
    (tmp_path / "img_00001.png").write_bytes(b"not a png at all")
    truncated = (tmp_path / "img_00002.jpg").read_bytes()
    (tmp_path / "img_00002.jpg").write_bytes(truncated[: len(truncated) // 2])
    source = ImageFolderSource(tmp_path, size=32)
    with pytest.warns(UserWarning, match="skipping unreadable image") as record:
        out = source.sample(1, RNG)
    skips = [w for w in record if w.category is UserWarning]
    assert [str(w.message).split(" (")[0] for w in skips] == [
        "skipping unreadable image img_00001.png",
        "skipping unreadable image img_00002.jpg",
    ]
    assert str(skips[1].message).endswith("2 skipped so far")
    assert out["path"] == "img_00003.png" and out["index"] == 3
    assert out["skipped"] == 2
    assert source.unreadable == {"img_00001.png", "img_00002.jpg"}
    again = source.sample(2, RNG)  # known bad: no new warning, same replacement
    assert again["index"] == 3 and again["skipped"] == 1


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(DatasetError, match="no images under"):
        ImageFolderSource(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing")


def test_synthetic_images_have_shapes_on_texture(tmp_path):
    make_image_folder(tmp_path, 3, sizes=((48, 64),), layout="flat")
    image = np.asarray(Image.open(tmp_path / "img_00000.jpg"))
    assert image.shape == (48, 64, 3)
    assert image.std() > 10  # not flat
