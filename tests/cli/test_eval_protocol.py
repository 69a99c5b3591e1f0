"""`vocaseg eval` applies the benchmark's protocol row: `--print-protocol` (no weights, no data),
values against the official configs, `--set` on top, cross-dataset runs without a seen set, and
an evaluation that records the row it ran."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import run_cli
from vocaseg.data.synthetic import make_shapes_dataset
from vocaseg.models.folder import save_model
from vocaseg.models.registry import create_model, get_entry

pytestmark = pytest.mark.usefixtures("offline_cache")


def printed(capsys, *argv) -> dict:
    code, out, err = run_cli(capsys, "eval", "--print-protocol", *argv)
    assert code == 0, err
    return json.loads(out)


KEYS = {
    "method", "dataset", "short_side", "max_long_side", "window", "stride", "pad", "logit_scale",
    "prob_thd", "area_thd", "background", "class_names", "templates", "pamr_steps", "seen",
    "sources",
}  # fmt: skip


def test_sclip_voc21_equals_the_official_config(capsys):
    row = printed(capsys, "--model", "sclip", "--dataset", "voc21")
    assert set(row) >= KEYS and row["row"] == "sclip/voc21"
    # wangf3014/SCLIP configs/cfg_voc21.py: logit_scale=65, prob_thd=0.1, area_thd=0.1,
    # Resize scale=(2048, 336); clip_segmentor.py: slide_crop=224, slide_stride=112, no padding.
    assert (row["short_side"], row["max_long_side"]) == (336, 2048)
    assert (row["window"], row["stride"], row["pad"]) == (224, 112, "none")
    assert (row["logit_scale"], row["prob_thd"], row["area_thd"]) == (65, 0.1, 0.1)
    assert row["background"] == "bg:threshold" and row["seen"] is None
    # configs/cls_voc21.txt: class 0 is 26 stuff words; 80 ImageNet templates
    assert len(row["class_names"]) == 21 and row["class_names"][0].count(";") == 25
    assert len(row["templates"]) == 80
    assert "cfg_voc21.py" in row["sources"]["logit_scale"]


def test_clearclip_and_naclip_rows(capsys):
    # mc-lan/ClearCLIP configs/cfg_context60.py: prob_thd=0.15; slide_crop 448, stride 224
    row = printed(capsys, "--model", "clearclip", "--dataset", "pc60")
    assert (row["prob_thd"], row["window"], row["stride"]) == (0.15, 448, 224)
    # sinahmr/NACLIP naclip.py: pamr_steps=10 (README numbers); cfg_voc21.py: whole image
    row = printed(capsys, "--model", "naclip", "--dataset", "voc21")
    assert row["pamr_steps"] == 10 and row["window"] is None


def test_tagclip_zero_shot_split_and_set_on_top(capsys):
    row = printed(capsys, "--model", "tagclip", "--dataset", "voc20", "--set", "stride=256")
    # ZegCLIP/TagCLIP test pipeline: short side 512, no long-side cap, 512 windows every 426
    assert (row["short_side"], row["max_long_side"], row["window"]) == (512, None, 512)
    assert row["stride"] == 256 and row["overrides"] == {"stride": 256}
    assert row["protocol"] == "zs-split" and len(row["seen"]) == 15
    assert row["templates"] == ["a photo of a {}"]  # voc12_single.npy: no period


def test_unknown_pairs_fall_back_to_the_models_settings(capsys):
    row = printed(capsys, "--model", "tagclip", "--dataset", "ade150")
    assert row["row"] is None and row["window"] == 512 and row["sources"] == {}
    row = printed(capsys, "--model", "sclip", "--dataset", "voc21", "--no-protocol-row")
    assert row["row"] is None and row["prob_thd"] == 0.0


def _coco_trained_folder(tmp_path):
    entry = get_entry("tagclip")
    torch.manual_seed(0)
    model = create_model("tagclip", entry.tiny, pretrained=False)
    training = {
        "split": {"setting": "inductive", "seen": ["person"], "unseen": ["frisbee"]},
        "dataset": {"dataset": "coco_stuff", "class_list": "coco_stuff"},
    }
    return save_model(model, tmp_path / "coco_model", training=training)


def test_a_model_trained_elsewhere_gets_no_seen_set(capsys, tmp_path):
    folder = _coco_trained_folder(tmp_path)
    row = printed(capsys, "--model", folder, "--dataset", "voc20")
    # ZegCLIP/TagCLIP cross_dataset/coco-to-voc.py: every class, single VOC template
    assert row["row"] == "tagclip/voc20@coco_stuff" and row["seen"] is None
    assert row["protocol"] == "ov-cross"


def test_evaluation_records_the_row_and_applies_it(capsys, tmp_path, tiny_clip_file):
    root = make_shapes_dataset(tmp_path / "shapes", 2, size=32, seed=1, split="val")
    out = tmp_path / "out"
    argv = ["--model", "maskclip", "--weights", tiny_clip_file, "--dataset", "folder"]
    code, _, err = run_cli(
        capsys, "eval", *argv, "--data-root", root, "-o", out, "--no-progress",
        "--set", "templates=single", "--set", "short_side=32",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((out / "metrics.json").read_text())["record"]
    assert record["protocol_row"] is None  # no row for a user's folder dataset
    assert record["settings"] == {"templates": "single", "short_side": 32}
    assert record["clip_weights"] == str(tiny_clip_file.resolve())
    code, _, err = run_cli(capsys, "eval", *argv, "--data-root", root, "-o", out)
    assert code == 2 and "already holds evaluation results" in err


def test_offline_without_weights_refuses_and_writes_nothing(capsys, tmp_path, monkeypatch):
    # The README's own example: no --weights, no cached CLIP, no network -> one line, exit 2.
    from data.layouts import label, write_voc_mmseg

    monkeypatch.setenv("VOCASEG_OFFLINE", "1")
    write_voc_mmseg(tmp_path / "data", {"a": label([0, 1, 2, 255])})
    out = tmp_path / "eval"
    argv = ["--dataset", "voc20", "--data-root", tmp_path / "data", "-o", out]
    code, _, err = run_cli(capsys, "eval", "--model", "maskclip", *argv)
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and "vocaseg download ViT-B/16" in lines[0]
    assert not out.exists()
    code, _, err = run_cli(capsys, "eval", "--model", "tagclip", *argv)
    assert code == 2 and "must be trained" in err and not out.exists()
