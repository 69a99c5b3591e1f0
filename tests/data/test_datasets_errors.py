"""Bad input to the readers ends in a DatasetError that names the thing and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from layouts import label, rgb, save_image, save_label, write_pairs, write_voc_mmseg

from vocaseg.data import load_dataset
from vocaseg.errors import DatasetError

pytestmark = pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")


def test_missing_root_lists_candidates_and_fixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOCASEG_DATASETS", str(tmp_path / "env"))
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    with pytest.raises(DatasetError) as err:
        load_dataset("ade150")
    message = str(err.value)
    assert (
        str(tmp_path / "env" / "ADEChallengeData2016/annotations_detectron2/validation") in message
    )
    assert "data/ade/ADEChallengeData2016/annotations/validation" in message
    assert "datasets/ADEChallengeData2016" in message
    assert "--data-root" in message and "download and extract the official release" in message
    with pytest.raises(DatasetError, match="vocaseg datasets prepare ade847 --src"):
        load_dataset("ade847")


def test_missing_split_file(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    with pytest.raises(DatasetError, match=r"split file .*'train'.*Segmentation/train\.txt"):
        load_dataset("voc21", root=tmp_path, split="train")


def test_split_entry_without_files(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0]), "b": label([1])})
    split = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    split.write_text("a\nghost\nb\n")
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/b.png").unlink()
    with pytest.raises(DatasetError) as caught:
        load_dataset("voc21", root=tmp_path)
    message = str(caught.value)
    assert f"of the 3 entries of {split}, 1 has no image, e.g. " in message
    assert "JPEGImages/ghost.*" in message
    assert "and 1 has no label file, e.g. " in message and "SegmentationClass/b.png" in message


def test_out_of_range_value_names_file_and_value(tmp_path):
    write_voc_mmseg(tmp_path, {"bad": label([0, 1, 22])})
    data = load_dataset("voc21", root=tmp_path)
    with pytest.raises(DatasetError, match=r"bad\.png holds value\(s\) \[22\].*unknown_as_ignore"):
        data[0]
    relaxed = load_dataset("voc21", root=tmp_path, unknown_as_ignore=True)
    np.testing.assert_array_equal(relaxed[0]["label"][:3, 0], [0, 1, 255])


def test_tiff_value_past_the_classes(tmp_path):
    write_pairs(tmp_path, "ADE20K_2021_17_01/images_detectron2/validation",
                "ADE20K_2021_17_01/annotations_detectron2/validation",
                {"x": label([847], dtype=np.uint16)}, label_suffix=".tif")  # fmt: skip
    with pytest.raises(DatasetError, match=r"x\.tif holds value\(s\) \[847\]"):
        load_dataset("ade847", root=tmp_path)[0]


def test_size_mismatch_names_the_file(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0, 1])})
    save_image(tmp_path / "VOCdevkit/VOC2012/JPEGImages/a.png", rgb(5, 5))
    with pytest.raises(
        DatasetError, match=r"SegmentationClass/a\.png is 12x8 but image .*a\.png is 5x5"
    ):
        load_dataset("voc21", root=tmp_path)[0]


def test_rgb_label_is_rejected(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    save_image(tmp_path / "VOCdevkit/VOC2012/SegmentationClass/a.png", rgb())
    with pytest.raises(DatasetError, match="single-channel index image"):
        load_dataset("voc21", root=tmp_path)[0]


def test_count_mismatch_warns_and_strict_raises(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    with pytest.warns(UserWarning, match="found 1 samples, the benchmark has 1449"):
        load_dataset("voc21", root=tmp_path)
    with pytest.raises(DatasetError, match=r"found 1 samples.*--strict"):
        load_dataset("voc21", root=tmp_path, strict=True)


def test_unknown_dataset_and_layout(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'voc'; known: voc21"):
        load_dataset("voc", root=tmp_path)
    with pytest.raises(DatasetError, match="no layout 'catseg'; known layouts: fcclip, mmseg"):
        load_dataset("voc21", root=tmp_path, layout="catseg")


def test_forced_layout_is_not_replaced_by_another(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    with pytest.raises(DatasetError, match="annotations_pascal21"):
        load_dataset("voc21", root=tmp_path, layout="fcclip")


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="needs root="):
        load_dataset("folder")
    with pytest.raises(DatasetError, match=r"classes\.txt not found"):
        load_dataset("folder", root=tmp_path)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DatasetError, match="no images folder"):
        load_dataset("folder", root=tmp_path)
    save_image(tmp_path / "images/x.png", rgb())
    save_label(tmp_path / "masks/y.png", label([0]))
    with pytest.raises(DatasetError, match="no image/mask pairs"):
        load_dataset("folder", root=tmp_path)


def test_unreadable_image(tmp_path):
    write_voc_mmseg(tmp_path, {"a": label([0])})
    (tmp_path / "VOCdevkit/VOC2012/JPEGImages/a.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"cannot read image .*a\.png"):
        load_dataset("voc21", root=tmp_path)[0]


def test_panoptic_png_without_its_json(tmp_path):
    write_pairs(tmp_path, "coco/val2017", "coco/panoptic_val2017", {"x": label([0])})
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json not found"):
        load_dataset("coco_panoptic", root=tmp_path)[0]
