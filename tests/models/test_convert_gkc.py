"""Importing checkpoints in the released GKC key layout (vocaseg.models.convert_gkc, ``vocaseg
convert gkc``): a synthetic checkpoint written with the released names converts into a model that
scores exactly as the one it was written from; the text tower is checked against --clip."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import run_cli
from gkc_helpers import TINY, tiny_gkc
from vocaseg.errors import CheckpointError
from vocaseg.models.convert_gkc import convert_checkpoint, convert_state_dict, infer_config
from vocaseg.models.folder import load_model
from vocaseg.text.vocab import Vocabulary

FINAL = TINY["dec_layers"]  # index of the final prediction point
VOCAB = Vocabulary.from_names(["person", "sky", "grass"])


def released_name(key: str) -> str:
    """vocaseg key -> the released code's key (written out independently of the converter)."""
    parts = key.split(".")
    if parts[0] == "embed_proj":
        point = int(parts[1])
        rest = ".".join(parts[2:])
        return f"embed_proj.{rest}" if point == FINAL else f"aux_embed_porj_{point}.{rest}"
    if parts[0] == "kd_proj":
        point = int(parts[1])
        rest = ".".join(parts[2:])
        return f"kd_proj.{rest}" if point == FINAL else f"aux_kd_porj_{point}.{rest}"
    return key


def released_checkpoint(model, path, extra: dict | None = None) -> None:
    """A detectron2-style checkpoint of ``model`` (a training build) in the released layout."""
    state = {released_name(k): v.clone() for k, v in model.saved_state_dict().items()}
    for key in [k for k in state if k.startswith("backbone.") and k.endswith("running_var")]:
        state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
    for key, value in model.clip.state_dict().items():
        if key != "logit_scale":
            state[f"text_encoder.{key}"] = value.clone()
    for key, value in model.teacher.state_dict().items():
        state[f"vision_clip.{key}"] = value.clone()
    state["empty_weight"] = torch.ones(1) * 0.1
    state.update(extra or {})
    torch.save({"model": state, "iteration": 49999}, path)


def scores(model, images):
    with torch.no_grad():
        return model(images, model.encode_vocabulary(VOCAB))


def test_key_mapping_of_the_released_layout():
    value = torch.zeros(1)
    state = {
        "backbone.layer1.0.conv1.weight": value,
        "backbone.bn1.num_batches_tracked": value,
        "sem_seg_head.predictor.query_feat.weight": value,
        "embed_proj.1.weight": value,
        "aux_embed_porj_3.1.bias": value,
        "kd_proj.weight": value,
        "aux_kd_porj_0.weight": value,
        "logit_scale": value,
        "text_encoder.ln_final.weight": value,
        "vision_clip.attnpool.c_proj.weight": value,
    }
    converted, text, dropped = convert_state_dict(state, dec_layers=9)
    assert sorted(converted) == [
        "backbone.layer1.0.conv1.weight",
        "embed_proj.3.1.bias",
        "embed_proj.9.1.weight",
        "kd_proj.0.weight",
        "kd_proj.9.weight",
        "logit_scale",
        "sem_seg_head.predictor.query_feat.weight",
    ]
    assert list(text) == ["ln_final.weight"]
    assert sorted(dropped) == [
        "backbone.bn1.num_batches_tracked",
        "vision_clip.attnpool.c_proj.weight",
    ]
    with pytest.raises(CheckpointError, match=r"unknown key 'grounding_proj\.weight'"):
        convert_state_dict({"grounding_proj.weight": value}, dec_layers=9)


def test_converted_checkpoint_scores_like_the_original(tmp_path):
    original = tiny_gkc(training=True, seed=3)
    path = tmp_path / "model_final.pth"
    released_checkpoint(original, path)
    state = torch.load(path, weights_only=True)["model"]
    inferred = infer_config(state, heads=TINY["heads"])
    assert {k: inferred[k] for k in ("num_queries", "dec_layers", "enc_layers", "enc_points")} == {
        k: TINY[k] for k in ("num_queries", "dec_layers", "enc_layers", "enc_points")
    }
    overrides = {k: TINY[k] for k in ("clip", "heads", "norm_groups")}
    model, report = convert_checkpoint(path, tmp_path / "folder", **overrides)
    assert report.text_tower == "from the checkpoint" and report.unfilled == []
    assert any(k.startswith("vision_clip.") for k in report.dropped)
    images = torch.randn(1, 3, 64, 64)
    assert torch.equal(scores(model, images), scores(original.eval(), images))
    loaded = load_model(tmp_path / "folder")  # self-contained: the text tower came with it
    assert json.loads((tmp_path / "folder/model.json").read_text())["self_contained"]
    assert torch.equal(scores(loaded, images), scores(original, images))


def test_text_tower_is_checked_against_the_clip(tmp_path):
    from vocaseg.clip import CLIPConfig, build

    original = tiny_gkc(training=True)
    path = tmp_path / "model_final.pth"
    released_checkpoint(original, path)
    overrides = {k: TINY[k] for k in ("clip", "heads", "norm_groups")}
    whole = build(CLIPConfig.from_dict(TINY["clip"]))
    whole.load_state_dict(original.clip.state_dict(), strict=False)
    whole.visual.load_state_dict(original.teacher.state_dict())
    torch.save(whole.state_dict(), tmp_path / "clip.pt")
    _, report = convert_checkpoint(path, clip_weights=str(tmp_path / "clip.pt"), **overrides)
    assert report.text_tower.startswith("checked against")
    torch.manual_seed(9)
    torch.save(build(CLIPConfig.from_dict(TINY["clip"])).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="text_encoder differs from the CLIP"):
        convert_checkpoint(path, clip_weights=str(tmp_path / "other.pt"), **overrides)


def test_missing_inference_weights_are_refused(tmp_path):
    original = tiny_gkc(training=True)
    path = tmp_path / "broken.pth"
    released_checkpoint(original, path)
    state = torch.load(path, weights_only=True)
    del state["model"]["non_object_embedding"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing \(1\): non_object_embedding"):
        convert_checkpoint(path, **{k: TINY[k] for k in ("clip", "heads", "norm_groups")})
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="is not a GKC checkpoint"):
        convert_checkpoint(path)


def test_convert_command(tmp_path, capsys, offline_cache):
    released_checkpoint(tiny_gkc(training=True), tmp_path / "ckpt.pth")
    clip = json.dumps(TINY["clip"])
    args = ["convert", "gkc", tmp_path / "ckpt.pth", "-o", tmp_path / "out",
            "--set", f"clip={clip}", "--set", "heads=4", "--set", "norm_groups=8"]  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "text tower: from the checkpoint" in out and (tmp_path / "out/model.json").is_file()
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "already holds a model" in err
