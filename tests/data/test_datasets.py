"""Readers on tiny fake datasets in each on-disk layout: images, label ids, class names, records."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from layouts import (
    label,
    rgb,
    save_image,
    save_label,
    write_coco_panoptic,
    write_pairs,
    write_video,
    write_voc_mmseg,
)

from vocaseg.data import list_datasets, load_dataset
from vocaseg.errors import DatasetError

IGNORE = 255
# tiny fakes never hold the benchmark's sample counts; the count check is tested in test_errors
pytestmark = pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")


def test_list_datasets_names_every_benchmark():
    assert list_datasets() == [
        "voc21", "voc20", "voc20b", "voc_aug", "voc20_aug", "pc60", "pc59", "pc459", "coco_stuff",
        "coco_object", "coco_panoptic", "ade150", "ade847", "cityscapes", "vspw", "vipseg",
        "folder",
    ]  # fmt: skip


@pytest.fixture
def voc_root(tmp_path):
    images = write_voc_mmseg(tmp_path, {"2007_000033": label([0, 1, 15, 255]), "b": label([20])})
    return tmp_path, images


def test_voc_mmseg_palette_png_read_as_indices(voc_root):
    root, images = voc_root
    data = load_dataset("voc21", root=root)
    assert len(data) == 2 and data.num_classes == 21 and data.ignore_index == 255
    assert data.class_names[:2] == ["background", "aeroplane"]
    item = data[0]
    assert item["path"].endswith("2007_000033.png")
    np.testing.assert_array_equal(item["image"], images["2007_000033"])
    assert item["label"].dtype == np.int64
    np.testing.assert_array_equal(item["label"][:4, 0], [0, 1, 15, 255])
    assert data.record["layout"] == "mmseg" and data.record["decoder"] == "identity"


def test_voc20_reduces_zero_and_carries_the_zero_shot_split(voc_root):
    data = load_dataset("voc20", root=voc_root[0])
    np.testing.assert_array_equal(data[0]["label"][:4, 0], [IGNORE, 0, 14, IGNORE])
    assert data.class_names[-1] == "tvmonitor" and len(data.class_names) == 20
    assert data.seen == tuple(range(15))


def test_voc20b_maps_background_to_20(voc_root):
    data = load_dataset("voc20b", root=voc_root[0])
    np.testing.assert_array_equal(data[0]["label"][:4, 0], [20, 0, 14, IGNORE])
    assert data.class_names[20] == "background" and data.seen is None


def test_voc_detectron2_layouts(tmp_path):
    write_pairs(
        tmp_path,
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/annotations_detectron2/val",
        {"a": label([0, 19, 255])},
    )
    write_pairs(tmp_path / "fc", "pascal_voc_d2/images/validation",
                "pascal_voc_d2/annotations_pascal21/validation", {"a": label([0, 20])})  # fmt: skip
    data = load_dataset("voc20", root=tmp_path)
    assert data.record["layout"] == "catseg"
    np.testing.assert_array_equal(data[0]["label"][:3, 0], [0, 19, IGNORE])
    fc = load_dataset("voc21", root=tmp_path / "fc")
    assert fc.record["layout"] == "fcclip"
    np.testing.assert_array_equal(fc[0]["label"][:2, 0], [0, 20])


def test_pascal_context_mmseg_pc60_and_pc59(tmp_path):
    pc = "VOCdevkit/VOC2010"
    write_pairs(tmp_path, f"{pc}/JPEGImages", f"{pc}/SegmentationClassContext",
                {"2008_000002": label([0, 1, 59])},
                split_file=f"{pc}/ImageSets/SegmentationContext/val.txt")  # fmt: skip
    pc60 = load_dataset("pc60", root=tmp_path)
    pc59 = load_dataset("pc59", root=tmp_path)
    np.testing.assert_array_equal(pc60[0]["label"][:3, 0], [0, 1, 59])
    np.testing.assert_array_equal(pc59[0]["label"][:3, 0], [IGNORE, 0, 58])
    assert pc59.class_names[49] == "table" and pc60.class_names[0] == "background"
    assert len(pc59.seen) == 49


@pytest.mark.parametrize(
    ("layout", "images", "labels"),
    [
        ("catseg", "VOCdevkit/VOC2010/JPEGImages",
         "VOCdevkit/VOC2010/annotations_detectron2/pc459_val"),
        ("san", "pcontext_full/val/image", "pcontext_full/val/label"),
    ],
)  # fmt: skip
def test_pc459_uint16_tiff_with_both_ignore_values(tmp_path, layout, images, labels):
    values = label([0, 458, 459, 65535], dtype=np.uint16)
    write_pairs(tmp_path, images, labels, {"2008_000002": values}, label_suffix=".tif")
    data = load_dataset("pc459", root=tmp_path)
    assert data.record["layout"] == layout and data.ignore_index == 65535
    np.testing.assert_array_equal(data[0]["label"][:4, 0], [0, 458, 65535, 65535])
    assert data.class_names[2] == "air conditioner"


def test_coco_stuff_selects_label_files_by_suffix(tmp_path):
    folder = "coco_stuff164k/annotations/val2017"
    write_pairs(tmp_path, "coco_stuff164k/images/val2017", folder,
                {"000000000139": label([0, 170, 255])}, label_suffix="_labelTrainIds.png",
                image_ext=".jpg")  # fmt: skip
    save_label(tmp_path / folder / "000000000139.png", label([0, 181, 255]))  # raw map beside
    save_label(tmp_path / folder / "000000000139_instanceTrainIds.png", label([1, 0, 0]))
    stuff = load_dataset("coco_stuff", root=tmp_path)
    assert len(stuff) == 1 and stuff.num_classes == 171
    np.testing.assert_array_equal(stuff[0]["label"][:3, 0], [0, 170, IGNORE])
    assert stuff.class_names[160] == "wall-concrete" and len(stuff.seen) == 156
    objects = load_dataset("coco_object", root=tmp_path)
    np.testing.assert_array_equal(objects[0]["label"][:3, 0], [1, 0, 0])
    assert objects.class_names[:2] == ["background", "person"]


def test_coco_raw_stuffthingmaps_are_mapped_at_load_time(tmp_path):
    # raw value = COCO id - 1: 0 person, 12 stop sign (trainId 11), 91 banner, 181 wood, 255
    write_pairs(tmp_path, "coco_stuff164k/images/val2017", "coco_stuff164k/annotations/val2017",
                {"a": label([0, 12, 91, 181, 255])})  # fmt: skip
    stuff = load_dataset("coco_stuff", root=tmp_path)
    assert stuff.record["layout"] == "raw"
    np.testing.assert_array_equal(stuff[0]["label"][:5, 0], [0, 11, 80, 170, IGNORE])
    objects = load_dataset("coco_object", root=tmp_path)
    np.testing.assert_array_equal(objects[0]["label"][:5, 0], [1, 12, 0, 0, 0])


def test_coco_panoptic_png_and_json(tmp_path):
    ids = np.zeros((6, 8), dtype=np.int64)
    ids[:2] = 3 + 256 * 7  # person (category 1)
    ids[2:4] = 70000  # wall-other-merged (category 199), id needs the blue channel
    ids[4:5] = 5  # crowd car (category 3) keeps its class
    segments = [
        {"id": 3 + 256 * 7, "category_id": 1, "iscrowd": 0},
        {"id": 70000, "category_id": 199, "iscrowd": 0},
        {"id": 5, "category_id": 3, "iscrowd": 1},
    ]
    write_coco_panoptic(tmp_path, {"000000000139": (ids, segments)})
    data = load_dataset("coco_panoptic", root=tmp_path)
    assert data.record["layout"] == "d2" and data.num_classes == 133
    np.testing.assert_array_equal(data[0]["label"][[0, 2, 4, 5], 0], [0, 131, 2, IGNORE])
    assert data.class_names[131] == "wall-other-merged"


def test_ade150_layouts(tmp_path):
    write_pairs(
        tmp_path,
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/annotations/validation",
        {"ADE_val_1": label([0, 1, 150])},
    )
    raw = load_dataset("ade150", root=tmp_path)
    assert raw.record["layout"] == "raw"
    np.testing.assert_array_equal(raw[0]["label"][:3, 0], [IGNORE, 0, 149])
    write_pairs(tmp_path, "ADEChallengeData2016/images/validation",
                "ADEChallengeData2016/annotations_detectron2/validation",
                {"ADE_val_1": label([0, 149, 255])})  # fmt: skip
    d2 = load_dataset("ade150", root=tmp_path)
    assert d2.record["layout"] == "d2"
    np.testing.assert_array_equal(d2[0]["label"][:3, 0], [0, 149, IGNORE])
    assert load_dataset("ade150", root=tmp_path, layout="raw").record["layout"] == "raw"
    assert d2.class_names[7] == "bed"


def test_ade847_tiff(tmp_path):
    write_pairs(tmp_path, "ADE20K_2021_17_01/images_detectron2/validation",
                "ADE20K_2021_17_01/annotations_detectron2/validation",
                {"ADE_val_00000001": label([0, 846, 65535], dtype=np.uint16)},
                label_suffix=".tif", image_ext=".jpg")  # fmt: skip
    data = load_dataset("ade847", root=tmp_path)
    np.testing.assert_array_equal(data[0]["label"][:3, 0], [0, 846, 65535])
    assert data.num_classes == 847 and data.class_names[0] == "wall"


def test_cityscapes_pairs_across_city_folders(tmp_path):
    for city, stem in (
        ("frankfurt", "frankfurt_000000_000294"),
        ("lindau", "lindau_000001_000019"),
    ):
        write_pairs(tmp_path, f"cityscapes/leftImg8bit/val/{city}", f"cityscapes/gtFine/val/{city}",
                    {stem: label([0, 18, 255])}, label_suffix="_gtFine_labelTrainIds.png",
                    image_suffix="_leftImg8bit")  # fmt: skip
    save_label(tmp_path / "cityscapes/gtFine/val/lindau/lindau_000001_000019_gtFine_labelIds.png",
               label([7]))  # fmt: skip
    data = load_dataset("cityscapes", root=tmp_path)
    assert len(data) == 2 and data.class_names[18] == "bicycle"
    np.testing.assert_array_equal(data[1]["label"][:3, 0], [0, 18, IGNORE])


def test_vspw_videos_and_frames(tmp_path):
    write_video(
        tmp_path,
        "VSPW_480p/data/{video}/origin",
        "VSPW_480p/data/{video}/mask",
        "VSPW_480p/val.txt",
        {"127_-hIVCYO4C90": [label([0, 1]), label([124, 255])], "9_x": [label([2])]},
    )
    data = load_dataset("vspw", root=tmp_path)
    assert data.videos == {"127_-hIVCYO4C90": [0, 1], "9_x": [2]}
    np.testing.assert_array_equal(data[0]["label"][:2, 0], [IGNORE, 0])
    np.testing.assert_array_equal(data[1]["label"][:2, 0], [123, IGNORE])
    assert data[1]["path"].endswith("00001.jpg") and data.seen is None


def test_vipseg_panoptic_masks_at_native_depth(tmp_path):
    masks = [label([0, 12, 1205, 6601], dtype=np.uint16)]  # void, pillar, pillar #5, class 66
    write_video(tmp_path, "VIPSeg_720P/images/{video}", "VIPSeg_720P/panomasks/{video}",
                "VIPSeg_720P/val.txt", {"v1": masks})  # fmt: skip
    data = load_dataset("vipseg", root=tmp_path)
    np.testing.assert_array_equal(data[0]["label"][:4, 0], [IGNORE, 11, 11, 65])
    assert 11 not in data.seen and len(data.seen) == 112
    assert data.classes.classes[7] == ("handrail", "fence")


@pytest.mark.parametrize("split_folders", [True, False])
def test_folder_dataset(tmp_path, split_folders):
    sub = "/val" if split_folders else ""
    (tmp_path / "classes.txt").write_text("road\ncar; automobile\n# comment\nsky\n")
    images = write_pairs(tmp_path, f"images{sub}", f"masks{sub}", {"x": label([0, 2, 255])},
                         image_ext=".jpg")  # fmt: skip
    data = load_dataset("folder", root=tmp_path)
    assert data.class_names == ["road", "car", "sky"]
    assert data.classes.classes[1] == ("car", "automobile")
    np.testing.assert_array_equal(data[0]["label"][:3, 0], [0, 2, IGNORE])
    assert data[0]["image"].shape == images["x"].shape


def test_record_and_sample_hash(voc_root):
    root, _ = voc_root
    record = load_dataset("voc21", root=root).record
    assert record["count"] == 2 and record["root"] == str(root.resolve())
    assert record["class_list"] == "voc21" and len(record["class_list_sha256"]) == 64
    save_label(root / "VOCdevkit/VOC2012/SegmentationClass/b.png", label([20, 1, 2, 3, 4]),
               palette=True)  # fmt: skip
    assert load_dataset("voc21", root=root).record["samples_sha256"] != record["samples_sha256"]


def test_root_discovery_from_environment_and_cwd(voc_root, monkeypatch, tmp_path_factory):
    root, _ = voc_root
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("VOCASEG_DATASETS", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    assert load_dataset("voc21").record["root"] == str(root.resolve())
    monkeypatch.delenv("DETECTRON2_DATASETS")
    os.symlink(root, elsewhere / "data")
    assert len(load_dataset("voc21")) == 2


def test_probing_never_writes(voc_root):
    root, _ = voc_root
    before = sorted(p for p in root.rglob("*"))
    for name in list_datasets()[:-1]:
        with contextlib.suppress(DatasetError):
            load_dataset(name, root=root)
    assert sorted(p for p in root.rglob("*")) == before


def test_image_modes_and_exif_orientation(tmp_path):
    from PIL import Image

    from vocaseg.data.imageio import read_image

    base = rgb(4, 6)
    image = Image.fromarray(base)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    assert read_image(tmp_path / "rot.jpg").shape == (6, 4, 3)
    Image.fromarray(base[..., 0]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png")[..., 2], base[..., 0])
    Image.fromarray(np.dstack([base, np.full((4, 6), 255, np.uint8)])).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), base)
    palette = Image.fromarray(label([0, 1], 4, 6))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png")[1, 0], [10, 20, 30])
    save_image(tmp_path / "x.png", base)
