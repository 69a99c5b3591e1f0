"""ZeroSeg as a model: MAE names at the top level of its state dict and MAE checkpoints through
``run.init``; the parameter count the layer shapes imply (``vocaseg train --print-model``);
inference against an independent computation of the GroupViT protocol (chained soft assignments,
top-k filter) and of the per-window background rule averaged over windows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vocaseg.cli.main import main
from vocaseg.engine.train_config import parse_train_config
from vocaseg.engine.trainer import load_initial_weights
from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.inference.predict import predict_scores
from vocaseg.models.layers.group_scoring import segment_onehot
from vocaseg.models.layers.mae import MaeDecoder, MaeEncoder
from vocaseg.models.registry import create_model, get_entry
from vocaseg.text.vocab import Vocabulary

TINY = get_entry("zeroseg").tiny
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(training: bool = False, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("zeroseg", TINY, pretrained=False, training=training, **overrides)


# ----- state dict and weights ------------------------------------------------------------------

TOP_LEVEL = {
    "patch_embed", "cls_token", "pos_embed", "blocks", "norm",
    "decoder_embed", "mask_token", "decoder_pos_embed", "decoder_blocks", "decoder_norm",
    "decoder_pred", "seg_head",
}  # fmt: skip


def test_state_dict_keeps_mae_names_at_the_top_and_never_the_teacher():
    model = tiny(training=True)
    saved = model.saved_state_dict()
    assert {key.split(".")[0] for key in saved} == TOP_LEVEL
    for key in (
        "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.bias", "decoder_pred.weight",
        "decoder_blocks.0.mlp.fc2.weight", "seg_head.layers.0.group_token",
        "seg_head.layers.1.group_projector.1.fc1.weight", "seg_head.layers.0.downsample.assign.q_proj.weight",
        "seg_head.norm.weight", "seg_head.proj.fc2.weight",
    ):  # fmt: skip
        assert key in saved, key
    assert saved["seg_head.proj.fc2.weight"].shape[0] == TINY["clip"]["embed_dim"]  # CLIP space
    assert model.teacher is not None and model.clip.visual is None
    assert "teacher" in model.training_only_modules and "clip" in model.frozen_modules


def _mae_checkpoint(path: Path, with_decoder: bool) -> Path:
    """A checkpoint as MAE's pretraining writes it: ``{"model": state dict, "epoch": ...}``."""
    torch.manual_seed(7)
    cfg = TINY
    encoder = MaeEncoder(
        cfg["img_size"], cfg["patch_size"], dim=cfg["embed_dim"], depth=1, num_heads=2
    )
    state = dict(encoder.state_dict())
    if with_decoder:
        grid = cfg["img_size"] // cfg["patch_size"]
        decoder = MaeDecoder(
            grid, cfg["patch_size"], encoder_dim=cfg["embed_dim"], dim=16, depth=1, num_heads=2
        )
        state.update(decoder.state_dict())
    torch.save({"model": state, "epoch": 799}, path)
    return path


def _init_config(path: Path, allow_missing: list[str]):
    return parse_train_config(
        {
            "model": {"name": "zeroseg", **TINY},
            "run": {
                "clip_weights": "random",
                "init": str(path),
                "init_allow_missing": allow_missing,
            },
            "schedule": {"iterations": 1},
        }
    )


@pytest.mark.parametrize("with_decoder", [True, False])
def test_mae_checkpoint_loads_through_run_init(tmp_path, with_decoder):
    path = _mae_checkpoint(tmp_path / "mae.pth", with_decoder)
    mae = torch.load(path, weights_only=True)["model"]
    model = tiny(training=True)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("seg_head.")}
    cfg = _init_config(path, ["seg_head.*", "decoder_*", "mask_token"])
    report, record = load_initial_weights(model, cfg)
    assert record["kind"] == "file" and sorted(report.loaded) == sorted(mae)
    state = model.state_dict()
    for key, value in mae.items():
        assert torch.equal(state[key], value), key
    left = set(report.missing)
    assert left >= set(head_before)
    decoder_keys = {
        k for k in model.saved_state_dict() if k.startswith("decoder_") or k == "mask_token"
    }
    assert (left & decoder_keys) == (set() if with_decoder else decoder_keys)
    assert all(torch.equal(state[k], v) for k, v in head_before.items())  # left at init
    summary = report.summary()
    assert f"loaded {len(mae)} tensors" in summary and "left at init" in summary
    assert f"(+{len(left) - 8} more)" in summary  # the first eight named, then a count


def test_encoder_only_checkpoint_needs_the_decoder_allowed_missing(tmp_path):
    path = _mae_checkpoint(tmp_path / "mae.pth", with_decoder=False)
    with pytest.raises(CheckpointError, match=r"missing .*decoder_") as err:
        load_initial_weights(tiny(training=True), _init_config(path, ["seg_head.*"]))
    assert "\n" not in str(err.value)


# ----- parameter count ---------------------------------------------------------------------------


def _linear(i: int, o: int) -> int:
    return i * o + o


def _block(d: int, ratio: float = 4.0) -> int:  # norm1, qkv, proj, norm2, fc1, fc2
    h = int(d * ratio)
    return 2 * d + _linear(d, 3 * d) + _linear(d, d) + 2 * d + _linear(d, h) + _linear(h, d)


def _grouping(d: int, s: int, s_out: int) -> int:  # GroupViT's downsample.* shapes
    norms = 4 * 2 * d
    mlp_inter = _linear(s, d // 2) + _linear(d // 2, s_out)
    cross = 4 * _linear(d, d) + 2 * d + _linear(d, 4 * d) + _linear(4 * d, d) + 2 * d
    return norms + mlp_inter + cross + 4 * _linear(d, d) + _linear(d, 4 * d) + _linear(4 * d, d)


def spec_parameter_count(cfg: dict, clip_dim: int) -> int:
    """Trainable parameters implied by the layer shapes (pos tables are fixed, not counted)."""
    d, p, e = cfg["seg_dim"], cfg["patch_size"], cfg["embed_dim"]
    dec = cfg["decoder_embed_dim"]
    depths, tokens = cfg["seg_depths"], cfg["seg_group_tokens"]
    outputs = cfg["seg_output_groups"]
    encoder = e * 3 * p * p + e + e + cfg["depth"] * _block(e) + 2 * e
    decoder = _linear(e, dec) + dec + cfg["decoder_depth"] * _block(dec) + 2 * dec
    decoder += _linear(dec, p * p * 3)
    head = (0 if d == e else _linear(e, d)) + sum(depths) * _block(d) + 2 * d
    for stage, out in enumerate(outputs):
        head += tokens[stage] * d + _grouping(d, tokens[stage], out)
        if stage > 0:  # group projector: LN, then a token MLP from the previous stage's tokens
            head += 2 * d + _linear(tokens[stage - 1], d // 2) + _linear(d // 2, tokens[stage])
    head += _linear(d, cfg["proj_hidden_dim"]) + _linear(cfg["proj_hidden_dim"], clip_dim)
    return encoder + decoder + head


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_tiny_parameter_count_matches_the_spec_shapes():
    model = tiny(training=True)
    assert _trainable(model) == spec_parameter_count(TINY, TINY["clip"]["embed_dim"])
    wide = tiny(seg_dim=48, seg_num_heads=2)  # a seg_head.embed Linear appears
    assert "seg_head.embed.weight" in wide.saved_state_dict()
    assert _trainable(wide) == spec_parameter_count({**TINY, "seg_dim": 48}, 32)


@pytest.mark.slow
def test_print_model_of_the_paper_config_shows_the_vit_b16_student(capsys):
    """Random weights, nothing downloaded: ViT-B/16 student + ViT-L/14 teacher and text tower."""
    assert main(["train", str(CONFIGS / "zeroseg_vitb16_in1k.yaml"), "--print-model"]) == 0
    out = capsys.readouterr().out
    total = re.search(r"^total\s+([\d,]+)\s+([\d,]+)$", out, re.MULTILINE)
    trainable = int(total.group(2).replace(",", ""))
    paper = {
        "embed_dim": 768, "depth": 12, "patch_size": 16, "decoder_embed_dim": 512,
        "decoder_depth": 8, "seg_dim": 768, "seg_depths": [2, 2, 1],
        "seg_group_tokens": [32, 8, 0], "seg_output_groups": [32, 8], "proj_hidden_dim": 4096,
    }  # fmt: skip
    assert trainable == spec_parameter_count(paper, clip_dim=768) == 181_830_064
    teacher = re.search(r"^teacher\s+([\d,]+)\s+0$", out, re.MULTILINE)
    assert int(teacher.group(1).replace(",", "")) == 303_966_208  # CLIP ViT-L/14 image tower


# ----- inference ---------------------------------------------------------------------------------


def _reference_scores(model, images: torch.Tensor, text: torch.Tensor, topk: int) -> torch.Tensor:
    """docs/methods/zeroseg.md "Inference and evaluation" written out for one image: M = A1ᵀA2ᵀ,
    upsample, argmax, per-segment softmax with the top-k mask from the pooled embedding,
    P = P_k ⊙ P_full, F = O·P, plus max P."""
    with torch.no_grad():
        head, encoded = model.segments(images)
    a1, a2 = head.assignments[0].soft[0], head.assignments[1].soft[0]  # [S1, N], [S2, S1]
    m = a1.t() @ a2.t()  # [N, S2]
    h, w = encoded.grid
    maps = m.t().reshape(1, -1, h, w)
    maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)[0]
    owner = maps.argmax(0)  # [H, W]
    g = F.normalize(head.g[0], dim=-1)
    z = F.normalize(head.z[0], dim=-1)
    t = F.normalize(text, dim=-1)
    probs = []
    for segment in g:
        logits = 100.0 * t @ segment
        full = logits.softmax(0)
        kept = (100.0 * t @ z).softmax(0).argsort(descending=True)[: min(topk, len(t))]
        masked = torch.full_like(logits, float("-inf"))
        masked[kept] = logits[kept]
        probs.append(masked.softmax(0) * full if topk else full)
    probs = torch.stack(probs)  # [S2, C]
    scores = probs[owner].permute(2, 0, 1)  # [C, H, W]
    best = torch.full((1, *scores.shape[1:]), float(probs.max()))
    return torch.cat([scores, best])[None]


@pytest.mark.parametrize("topk", [5, 2, 0])
def test_forward_matches_the_groupvit_protocol_written_out(topk):
    model = tiny(topk_filter=topk)
    torch.manual_seed(3)
    images = torch.randn(1, 3, 32, 48)  # a 4 x 6 token grid: the table is resized
    text = torch.randn(6, TINY["clip"]["embed_dim"])
    with torch.no_grad():
        out = model(images, text)
    assert out.shape == (1, 7, 32, 48)
    torch.testing.assert_close(out, _reference_scores(model, images, text, topk))
    with torch.no_grad():
        head, encoded = model.segments(images)
    onehot = segment_onehot([a.soft for a in head.assignments], encoded.grid, (32, 48))
    assert onehot.shape == (1, 4, 32, 48) and torch.equal(onehot.sum(1), torch.ones(1, 32, 48))


def _groupvit_window(model, window: torch.Tensor, text: torch.Tensor, thd: float) -> torch.Tensor:
    """[background, F] of one window: background where max_c F < min(thd, max P)."""
    with torch.no_grad():
        out = model(window, text)
    scores, best = out[:, :-1], out[0, -1, 0, 0]
    background = scores.amax(1, keepdim=True) < min(thd, float(best))
    return torch.cat([background.float(), scores], dim=1)


def _normalised(model, image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.preprocess.mean).view(1, 3, 1, 1)
    return (image - mean) / torch.tensor(model.preprocess.std).view(1, 3, 1, 1)


def test_groupvit_background_per_window_averaged_and_placed_at_the_background_index():
    vocabulary = Vocabulary.from_names(["cat", "background", "dog", "tree"])
    model = tiny(short_side=0, window=32, stride=16, background="bg:groupvit")
    torch.manual_seed(4)
    image = torch.rand(1, 3, 32, 48) * 255
    text = model.text_for(vocabulary)
    assert text.shape[0] == 3  # background is not encoded
    x = _normalised(model, image)
    with torch.no_grad():
        first = model(x[..., :32], text)[:, :-1].amax(1)
    thd = float(first.median())  # below every max P: some pixels fall under it, some do not
    model.update_settings(prob_thd=thd)
    with torch.no_grad():
        out = predict_scores(model, image, text, vocabulary)
    total = torch.zeros(1, 4, 32, 48)
    count = torch.zeros(1, 1, 32, 48)
    for left in (0, 16):  # windows of 32 every 16 px across 48
        total[..., left : left + 32] += _groupvit_window(model, x[..., left : left + 32], text, thd)
        count[..., left : left + 32] += 1
    stitched = total / count  # [B, 1 + C, H, W]: background first
    expected = torch.cat([stitched[:, 1:2], stitched[:, :1], stitched[:, 2:]], dim=1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(("thd", "limit"), [(0.5, 0.5), (0.95, 0.9)])
def test_background_threshold_is_capped_by_the_best_segment_probability(thd, limit):
    """t = min(prob_thd, max P): with max P = 0.9, a threshold of 0.95 acts as 0.9."""
    model = tiny(background="bg:groupvit", prob_thd=thd)
    best = torch.arange(0.05, 1.0, 0.05)  # each pixel's best class score
    scores = torch.stack([best, best / 2]).view(1, 2, 1, -1)  # [B, C, 1, W]
    logits = torch.cat([scores, torch.full((1, 1, 1, best.numel()), 0.9)], dim=1)
    scored = Vocabulary.from_names(["cat", "dog"])
    window = model.window_output(logits, scored, model.background)
    assert window.shape == (1, 3, 1, best.numel())
    assert torch.equal(window[0, 0, 0], (best < limit).float())  # background first
    vocabulary = Vocabulary.from_names(["cat", "dog", "background"])
    final = model.finalize(window, vocabulary, model.background)
    assert torch.equal(final[:, 2], window[:, 0]) and torch.equal(final[:, :2], scores)


def test_bg_none_gives_plain_class_scores():
    model = tiny(short_side=0, window=0)
    vocabulary = Vocabulary.from_names(["cat", "dog"])
    image = torch.rand(1, 3, 32, 40) * 255
    text = model.text_for(vocabulary)
    with torch.no_grad():
        out = predict_scores(model, image, text, vocabulary)
        direct = model(_normalised(model, image), text)[:, :-1]
    torch.testing.assert_close(out, direct)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"teacher_grids": [2, 3]}, "teacher_grids must start with 1"),
        ({"mask_ratio": 1.0}, "mask_ratio must lie in"),
        ({"seg_depths": [2, 2]}, "one entry per head stage"),
        ({"img_size": 30}, "multiple of patch_size"),
    ],
)
def test_bad_settings_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        tiny(**overrides)
    assert "\n" not in str(err.value)
