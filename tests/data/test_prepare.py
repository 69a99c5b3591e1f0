"""Converters on tiny fake releases: written files, decoded values, counts and reports."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import scipy.io
from layouts import label, rgb, save_image, save_label

from vocaseg.data import load_dataset
from vocaseg.data.datasets import CONVERTIBLE
from vocaseg.data.imageio import read_label
from vocaseg.data.prepare import CONVERTERS, prepare
from vocaseg.data.prepare.ade847 import resize_bilinear, resize_nearest, target_size
from vocaseg.errors import DatasetError

pytestmark = pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")


def test_every_convertible_dataset_has_a_converter():
    assert set(CONVERTIBLE) == set(CONVERTERS)


@pytest.mark.parametrize("as_zip", [False, True])
def test_coco_stuff_and_object_from_stuffthingmaps(tmp_path, as_zip):
    src, dst = tmp_path / "stuffthingmaps_trainval2017", tmp_path / "out"
    # raw = COCO id - 1: person, stop sign (trainId 11), banner (80), wood (170), unlabeled
    save_label(src / "val2017/000000000139.png", label([0, 12, 91, 181, 255]))
    if as_zip:
        with zipfile.ZipFile(tmp_path / "stuff.zip", "w") as archive:
            archive.write(src / "val2017/000000000139.png", "val2017/000000000139.png")
        src = tmp_path / "stuff.zip"
    report = prepare("coco_stuff", src, dst)
    assert report.counts == {"val2017": 1} and not report.ok  # 1 of 5000, train missing
    assert not (dst / ".extracted").exists()  # the unpacked archive is removed after the run
    assert report.missing and "train2017" in report.missing[0]
    out = dst / "coco_stuff164k/annotations/val2017"
    np.testing.assert_array_equal(
        read_label(out / "000000000139_labelTrainIds.png")[:5, 0], [0, 11, 80, 170, 255]
    )
    np.testing.assert_array_equal(
        read_label(out / "000000000139_instanceTrainIds.png")[:5, 0], [1, 12, 0, 0, 0]
    )
    save_image(dst / "coco_stuff164k/images/val2017/000000000139.jpg", rgb())
    data = load_dataset("coco_stuff", root=dst)
    assert data.record["layout"] == "mmseg"
    np.testing.assert_array_equal(data[0]["label"][:5, 0], [0, 11, 80, 170, 255])


def test_coco_rejects_a_map_with_unused_ids(tmp_path):
    save_label(tmp_path / "src/val2017/x.png", label([11]))  # 0-based id 11 is unused
    with pytest.raises(DatasetError, match=r"x\.png is not a stuffthingmap \(values \[11\]\)"):
        prepare("coco_stuff", tmp_path / "src", tmp_path / "dst")


def _voc(dst, train, val):
    voc = dst / "VOCdevkit/VOC2012"
    for image_id in train + val:
        save_label(voc / f"SegmentationClass/{image_id}.png", label([0, 1, 255]), palette=True)
        save_image(voc / f"JPEGImages/{image_id}.jpg", rgb())
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(train) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(val) + "\n")


def test_voc_aug_from_sbd(tmp_path):
    sbd, dst = tmp_path / "benchmark_RELEASE/dataset", tmp_path / "root"
    _voc(dst, train=["t1"], val=["v1"])
    (sbd / "cls").mkdir(parents=True)
    for image_id in ("s1", "v1", "t1"):
        mask = label([0, 7, 20]).astype(np.uint8)
        scipy.io.savemat(sbd / f"cls/{image_id}.mat", {"GTcls": {"Segmentation": mask}})
        save_image(dst / f"VOCdevkit/VOC2012/JPEGImages/{image_id}.jpg", rgb())
    (sbd / "train.txt").write_text("s1\nt1\n")
    (sbd / "val.txt").write_text("v1\n")
    report = prepare("voc_aug", tmp_path / "benchmark_RELEASE", dst)
    assert report.counts == {"trainaug": 2, "aug": 1} and not report.missing
    splits = dst / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    assert (splits / "trainaug.txt").read_text() == "s1\nt1\n"  # SBD's v1 is VOC val: left out
    assert (splits / "aug.txt").read_text() == "s1\n"
    train = load_dataset("voc_aug", root=dst, split="train")
    assert [s.key for s in train.samples] == ["s1", "t1"]
    np.testing.assert_array_equal(train[0]["label"][:3, 0], [0, 7, 20])  # from SBD
    np.testing.assert_array_equal(train[1]["label"][:3, 0], [0, 1, 255])  # VOC's own mask
    assert len(load_dataset("voc_aug", root=dst, split="val")) == 1
    voc20 = load_dataset("voc20_aug", root=dst, split="train")  # the zero-shot training set
    np.testing.assert_array_equal(voc20[0]["label"][:3, 0], [255, 6, 19])  # reduce-zero
    assert voc20.class_names[0] == "aeroplane" and voc20.seen == tuple(range(15))


def _context_release(tmp_path):
    src = tmp_path / "release"
    (src / "trainval").mkdir(parents=True)
    maps = {"2008_000002": label([0, 2, 3, 458], dtype=np.uint16),
            "2008_000003": label([459, 284], dtype=np.uint16)}  # fmt: skip
    for image_id, labels in maps.items():
        scipy.io.savemat(src / f"trainval/{image_id}.mat", {"LabelMap": labels})
    images = [{"file_name": "2008_000002.jpg", "phase": "val"},
              {"file_name": "2008_000003.jpg", "phase": "train"}]  # fmt: skip
    (src / "trainval_merged.json").write_text(json.dumps({"images": images}))
    return src


def test_pascal_context_59_and_459_from_mat(tmp_path):
    src, dst = _context_release(tmp_path), tmp_path / "root"
    report = prepare("pc59", src, dst, source="mat")
    assert report.counts == {"train": 1, "val": 1} and report.expected["val"] == 5105
    voc = dst / "VOCdevkit/VOC2010"
    # 0 unlabeled -> 0, 2 aeroplane -> 1, 3 airconditioner (not in 59) -> 0, 458 wood -> 59
    np.testing.assert_array_equal(
        read_label(voc / "SegmentationClassContext/2008_000002.png")[:4, 0], [0, 1, 0, 59]
    )
    assert (voc / "ImageSets/SegmentationContext/val.txt").read_text() == "2008_000002\n"
    prepare("pc459", src, dst)
    tif = read_label(voc / "annotations_detectron2/pc459_val/2008_000002.tif")
    assert tif.dtype == np.uint16
    np.testing.assert_array_equal(tif[:4, 0], [65535, 1, 2, 457])
    save_image(voc / "JPEGImages/2008_000002.jpg", rgb())
    pc59 = load_dataset("pc59", root=dst)
    np.testing.assert_array_equal(pc59[0]["label"][:4, 0], [255, 0, 255, 58])
    pc459 = load_dataset("pc459", root=dst)
    assert pc459.class_names[1] == "aeroplane"
    np.testing.assert_array_equal(pc459[0]["label"][:4, 0], [65535, 1, 2, 457])


def test_ade847_release(tmp_path):
    folder = tmp_path / "ADE20K_2021_17_01/images/ADE/validation/cultural/apse__indoor"
    image = rgb(520, 600)
    save_image(folder / "ADE_val_00000001.jpg", image)
    seg = np.zeros((520, 600, 3), dtype=np.uint8)
    seg[:260, :, 0], seg[:260, :, 1] = 115, 162  # wall: 2978 = 11 * 256 + 162 -> trainId 0
    seg[260:, :, 0], seg[260:, :, 1] = 0, 1  # ADE id 1 is not among the 847 -> 65535
    save_image(folder / "ADE_val_00000001_seg.png", seg)
    save_image(folder.parent / "ADE_train_00000009.jpg", rgb(8, 8))  # no _seg.png
    dst = tmp_path / "out"
    report = prepare("ade847", tmp_path / "ADE20K_2021_17_01", dst)
    assert report.counts == {"validation": 1, "training": 0} and len(report.missing) == 1
    data = load_dataset("ade847", root=dst)
    item = data[0]
    assert item["image"].shape == (512, 591, 3)  # short side 520 -> 512, 600 -> round(590.8)
    assert set(np.unique(item["label"][:250])) == {0}
    assert set(np.unique(item["label"][262:])) == {65535}


def test_short_side_rule_and_opencv_style_resizing():
    assert target_size(520, 600) == (512, 591)
    assert target_size(600, 520) == (591, 512)
    assert target_size(512, 2000) == (512, 2000)  # short side not above 512: kept
    labels = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(labels, 2, 2), [[0, 2], [8, 10]])
    image = rgb(6, 8).astype(np.uint8)
    half = resize_bilinear(image, 3, 4)
    blocks = image.reshape(3, 2, 4, 2, 3).astype(float).mean(axis=(1, 3))
    np.testing.assert_allclose(half, blocks, atol=0.51)  # exact 2x: mean of each 2x2 block


def test_prepare_errors(tmp_path):
    with pytest.raises(DatasetError, match="no converter for 'ade150'"):
        prepare("ade150", tmp_path, tmp_path)
    with pytest.raises(DatasetError, match=r"source .*missing\.zip not found"):
        prepare("coco_stuff", tmp_path / "missing.zip", tmp_path / "dst")
    with pytest.raises(DatasetError, match="no 'trainval' folder"):
        prepare("pc59", tmp_path, tmp_path / "dst", source="mat")


CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "data"
    release = root / "cityscapes"
    values = list(range(34))  # every official labelIds value
    stems = {"val": "frankfurt_000000_000294", "train": "aachen_000000_000019"}
    for split, stem in stems.items():
        city = stem.split("_")[0]
        save_label(release / f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                   label(values, height=34, width=4))  # fmt: skip
        save_image(release / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", rgb(34, 4))
    save_label(release / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_color.png",
               label([0]))  # other gtFine files are left alone  # fmt: skip
    with pytest.raises(
        DatasetError,
        match=r"no label files \(\*_gtFine_labelTrainIds\.png\)"
        r".*vocaseg datasets prepare cityscapes --src .*cityscapes --dst",
    ):
        load_dataset("cityscapes", root=root)  # fmt: skip
    report = prepare("cityscapes", release, root)
    assert report.counts == {"train": 1, "val": 1} and report.missing == [
        "gtFine/test (not in cityscapes)"
    ]
    expected = [CITYSCAPES_TRAIN_IDS.get(v, 255) for v in values]
    written = read_label(release / f"gtFine/val/frankfurt/{stems['val']}_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(written[:, 0], expected)
    data = load_dataset("cityscapes", root=root)
    assert len(data) == 1 and data.class_names[0] == "road"
    np.testing.assert_array_equal(data[0]["label"][:, 3], expected)
    assert len(load_dataset("cityscapes", root=root, split="train")) == 1


def test_cityscapes_from_the_zip_writes_under_dst(tmp_path):
    stem = "lindau_000001_000019"
    member = f"gtFine/val/lindau/{stem}_gtFine_labelIds.png"
    save_label(tmp_path / member, label([26, 0, 33]))
    with zipfile.ZipFile(tmp_path / "gtFine_trainvaltest.zip", "w") as archive:
        archive.write(tmp_path / member, member)
        archive.writestr("license.txt", "terms")
    dst = tmp_path / "out"
    report = prepare("cityscapes", tmp_path / "gtFine_trainvaltest.zip", dst)
    assert report.counts == {"val": 1}
    out = read_label(dst / f"cityscapes/gtFine/val/lindau/{stem}_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(out[:3, 0], [13, 255, 18])
    assert not (dst / ".extracted").exists()
