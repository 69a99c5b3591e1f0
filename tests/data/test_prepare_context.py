"""PASCAL Context PC-59/60 from ``trainval_merged.json``: the converter's labels equal an independent
reading of the same JSON (COCO RLE decoded here with a plain loop, segments painted in file order,
ids mapped with MMSegmentation's ``np.digitize`` rule), pixel for pixel; plus the RLE decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from layouts import rgb, save_image

from cli_helpers import run_cli
from vocaseg.data import load_dataset
from vocaseg.data.imageio import read_label
from vocaseg.data.prepare import prepare
from vocaseg.data.prepare.rle import decode_rle, string_counts
from vocaseg.errors import DatasetError

pytestmark = pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")

# MMSegmentation tools/dataset_converters/pascal_context.py, _mapping (before np.sort)
MMSEG_MAPPING = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162,
    420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72,
    458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
]  # fmt: skip


# ---- the test's own COCO RLE: column-major runs, and the compressed string both ways ----


def runs_of(mask: np.ndarray) -> list[int]:
    runs, value, length = [], 0, 0
    for pixel in mask.T.reshape(-1).tolist():  # column-major
        if pixel == value:
            length += 1
        else:
            runs.append(length)
            value, length = pixel, 1
    return [*runs, length]


def encode_string(runs: list[int]) -> str:
    chars = []
    for index, run in enumerate(runs):
        x = run - runs[index - 2] if index > 2 else run
        while True:
            group, x = x & 0x1F, x >> 5
            done = x == -1 if group & 0x10 else x == 0
            chars.append(chr(48 + (group if done else group | 0x20)))
            if done:
                break
    return "".join(chars)


def parse_string(text: str) -> list[int]:
    counts, position = [], 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            code = ord(text[position]) - 48
            value |= (code & 0x1F) << shift
            more, position, shift = code & 0x20, position + 1, shift + 5
            if not more and code & 0x10:
                value -= 1 << shift
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def plain_decode(segmentation: dict) -> np.ndarray:
    height, width = segmentation["size"]
    counts = segmentation["counts"]
    runs = parse_string(counts) if isinstance(counts, str) else counts
    flat, value = [], 0
    for run in runs:
        flat += [value] * run
        value = 1 - value
    return np.array(flat, dtype=bool).reshape(width, height).T


def independent_labels(annotations: dict, phase: str) -> dict[str, np.ndarray]:
    mapping = np.sort(np.array(MMSEG_MAPPING))
    out = {}
    for image in annotations["images"]:
        if image["phase"] != phase:
            continue
        mask = np.zeros((image["height"], image["width"]))
        for segment in annotations["annos_segmentation"]:  # file order
            if segment["image_id"] == image["image_id"]:
                mask[plain_decode(segment["segmentation"])] = segment["category_id"]
        index = np.digitize(mask.ravel(), mapping, right=True)
        out[image["file_name"][:-4]] = np.arange(60, dtype=np.uint8)[index].reshape(mask.shape)
    return out


# ---- a generated trainval_merged.json ----


def _blob(rng, height, width) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    top, left = rng.integers(0, height - 2), rng.integers(0, width - 2)
    mask[top : rng.integers(top + 1, height + 1), left : rng.integers(left + 1, width + 1)] = True
    return mask | (rng.random((height, width)) < 0.08)


def detail_json(path, seed: int = 0) -> dict:
    """Three images (val, train, val); overlapping segments of PC-60 classes in both RLE forms."""
    rng = np.random.default_rng(seed)
    images = [
        {"image_id": 2008000002, "file_name": "2008_000002.jpg", "height": 14, "width": 18,
         "phase": "val"},
        {"image_id": 2008000003, "file_name": "2008_000003.jpg", "height": 11, "width": 9,
         "phase": "train"},
        {"image_id": 2010000007, "file_name": "2010_000007.jpg", "height": 16, "width": 12,
         "phase": "val"},
    ]  # fmt: skip
    segments = []
    for n in range(18):  # interleaved across images, as in the release
        image = images[n % 3]
        mask = _blob(rng, image["height"], image["width"])
        runs = runs_of(mask)
        counts = encode_string(runs) if n % 2 else runs  # compressed and uncompressed forms
        segments.append({
            "id": 100 + n, "image_id": image["image_id"],
            "category_id": int(rng.choice(MMSEG_MAPPING[1:])),
            "segmentation": {"size": [image["height"], image["width"]], "counts": counts},
            "iscrowd": 0, "area": int(mask.sum()),
        })  # fmt: skip
    # two full overlaps on the first image: painting order decides the label
    whole = {"size": [14, 18], "counts": encode_string(runs_of(np.ones((14, 18), bool)))}
    corner = np.zeros((14, 18), dtype=bool)
    corner[:4, :5] = True
    segments.append({"id": 900, "image_id": 2008000002, "category_id": 458,
                     "segmentation": whole})  # fmt: skip
    segments.append({"id": 901, "image_id": 2008000002, "category_id": 2,
                     "segmentation": {"size": [14, 18], "counts": runs_of(corner)}})  # fmt: skip
    data = {
        "info": {}, "images": images, "annos_segmentation": segments,
        "categories": [{"category_id": c, "name": str(c)} for c in MMSEG_MAPPING[1:]],
        "annos_occlusion": [], "annos_boundary": [], "parts": [],
    }  # fmt: skip
    path.write_text(json.dumps(data))
    return data


def test_rle_string_decoder_on_hand_computed_counts():
    # runs 5, 2, 40, 1: 40 takes two groups ("X1"); run 3 is stored as 1 - 2 = -1 ("O")
    assert string_counts("52X1O").tolist() == [5, 2, 40, 1]
    mask = decode_rle({"size": [6, 8], "counts": "52X1O"})
    assert mask.shape == (6, 8) and mask.sum() == 3
    assert mask[5, 0] and mask[0, 1] and mask[:, 2:7].sum() == 0 and mask[5, 7]


def test_rle_decoder_matches_the_plain_loop_on_random_masks():
    rng = np.random.default_rng(1)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((height, width)) < rng.random()
        text = encode_string(runs_of(mask))
        assert string_counts(text).tolist() == parse_string(text)
        for counts in (text, runs_of(mask)):
            decoded = decode_rle({"size": [height, width], "counts": counts})
            np.testing.assert_array_equal(decoded, plain_decode({"size": [height, width],
                                                                 "counts": counts}))  # fmt: skip
            np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"size": [2, 2], "counts": [1, 2]}, "cover 3 pixels, not 2x2"),
        ({"size": [2, 2], "counts": "1\x7f"}, "unreadable RLE counts"),
        ([[0.0, 1.0, 2.0, 2.0]], "not a COCO RLE mask"),
    ],
)
def test_rle_errors_name_the_segment(segmentation, message):
    with pytest.raises(DatasetError, match=f"segment 7.*{message}"):
        decode_rle(segmentation, "segment 7")


@pytest.mark.parametrize("name", ["pc59", "pc60"])
def test_prepare_paints_the_json_like_an_independent_reading(tmp_path, capsys, name):
    data = detail_json(tmp_path / "trainval_merged.json")
    dst = tmp_path / "root"
    code, out, _ = run_cli(capsys, "datasets", "prepare", name,
                             "--src", tmp_path / "trainval_merged.json", "--dst", dst)  # fmt: skip
    assert code == 1 and "val: 2 (expected 5105)" in out and "train: 1 (expected 4998)" in out
    voc = dst / "VOCdevkit/VOC2010"
    for phase in ("val", "train"):
        expected = independent_labels(data, phase)
        lists = (voc / f"ImageSets/SegmentationContext/{phase}.txt").read_text().split()
        assert lists == sorted(expected)
        for stem, labels in expected.items():
            written = read_label(voc / f"SegmentationClassContext/{stem}.png")
            np.testing.assert_array_equal(written, labels)
    first = read_label(voc / "SegmentationClassContext/2008_000002.png")
    assert first[0, 0] == 1 and first[13, 17] == 59  # aeroplane painted last over wood
    for stem, image in (("2008_000002", rgb(14, 18)), ("2010_000007", rgb(16, 12))):
        save_image(voc / f"JPEGImages/{stem}.jpg", image)
    reader = load_dataset(name, root=dst)
    expected = independent_labels(data, "val")
    for index, stem in enumerate(sorted(expected)):
        want = expected[stem].astype(np.int64)
        if name == "pc59":  # reduce-zero: background ignored, k -> k - 1
            want = np.where(want == 0, 255, want - 1)
        np.testing.assert_array_equal(reader[index]["label"], want)


def test_json_source_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"no trainval_merged\.json under .*--from mat"):
        prepare("pc59", tmp_path, tmp_path / "dst")
    (tmp_path / "trainval_merged.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"trainval_merged\.json is not valid JSON"):
        prepare("pc59", tmp_path, tmp_path / "dst")
    data = detail_json(tmp_path / "trainval_merged.json")
    data["annos_segmentation"][0]["segmentation"]["size"] = [3, 3]
    data["annos_segmentation"][0]["segmentation"]["counts"] = [9]
    (tmp_path / "trainval_merged.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"segment 100 of 2008_000002\.jpg is 3x3 but the image"):
        prepare("pc60", tmp_path / "trainval_merged.json", tmp_path / "dst")
    with pytest.raises(DatasetError, match=r"--from mat does not apply to coco_stuff"):
        prepare("coco_stuff", tmp_path, tmp_path / "dst", source="mat")


def test_category_outside_pc60_becomes_background_with_a_note(tmp_path):
    data = detail_json(tmp_path / "trainval_merged.json")
    data["annos_segmentation"].append(
        {
            "id": 999,
            "image_id": 2008000003,
            "category_id": 3,
            "segmentation": {"size": [11, 9], "counts": [0, 99]},
        }
    )
    (tmp_path / "trainval_merged.json").write_text(json.dumps(data))
    report = prepare("pc60", tmp_path, tmp_path / "dst")
    labels = read_label(tmp_path / "dst/VOCdevkit/VOC2010/SegmentationClassContext/2008_000003.png")
    assert (labels == 0).all()  # painted over everything with id 3, which PC-60 does not keep
    assert any("outside PC-60 painted as background: [3]" in note for note in report.notes)
