"""The shipped TagCLIP / ZegCLIP training configs: they validate, carry the presets of
docs/methods/tagclip.md §2.5 and §6, and
build models with random CLIP weights (no download); ``vocaseg train --print-model`` on a tiny one."""

from pathlib import Path

import pytest

from vocaseg.cli.main import main
from vocaseg.engine import checkpoint as ckpt
from vocaseg.engine.train_config import load_train_config
from vocaseg.models.registry import build_config, create_model

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*clip_*.yaml"))
TINY = Path(__file__).with_name("tagclip_tiny.yaml")


def test_all_seven_configs_ship():
    names = {p.stem for p in CONFIGS}
    assert {
        "tagclip_voc_inductive", "tagclip_voc_transductive", "tagclip_voc_supervised",
        "tagclip_coco_inductive", "tagclip_coco_transductive",
        "zegclip_voc_inductive", "zegclip_coco_inductive",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_and_matches_the_spec(path):
    cfg = load_train_config(path)
    model = build_config(cfg.method, cfg.model_options)
    assert model.setting == cfg.data.zero_shot.setting
    assert model.num_prompts == (10 if "_voc_" in path.stem else 100)
    assert model.templates == ("voc_single" if "_voc_" in path.stem else "coco15")
    assert cfg.optim.lr == 2e-4 and cfg.optim.no_decay == [] and cfg.schedule.warmup_iters == 1500
    # The released recipes: global batch 16, except TagCLIP COCO transductive (8 GPUs x 1).
    batch = 8 if path.stem == "tagclip_coco_transductive" else 16
    assert cfg.data.batch_size * cfg.optim.accumulate == batch
    if cfg.method == "zegclip":
        assert (model.trusty_token, model.trusty_learner, model.mask_weight) == (False, False, 100)
    else:
        assert model.mask_weight == 20 and model.trusty_learner
        assert model.trusty_token == (path.stem in ("tagclip_voc_inductive", "tagclip_coco_inductive", "tagclip_coco_transductive"))  # fmt: skip


def test_transductive_start_checkpoint_survives_the_inductive_run(tmp_path):
    # Transductive starts from the inductive checkpoint at half schedule; the inductive
    # run's pruning (checkpoint.keep_last) must not delete it.
    configs = {load_train_config(p).run.output: load_train_config(p) for p in CONFIGS}
    starts = [c.run.init for c in configs.values() if c.run.init]
    assert len(starts) == 2
    for start in starts:
        source = configs[str(Path(start).parent.parent)]
        folder = tmp_path / source.run.output
        every, total = source.checkpoint.every, source.schedule.iterations
        for step in range(every, total + every, every):
            ckpt.checkpoint_path(folder, min(step, total)).parent.mkdir(parents=True, exist_ok=True)
            ckpt.checkpoint_path(folder, min(step, total)).touch()
            ckpt.prune_checkpoints(folder, source.checkpoint.keep_last, source.checkpoint.keep)
        assert (folder / Path(start).name).is_file(), start
        assert int(Path(start).stem.split("_")[1]) * 2 == total


def test_create_model_from_config_with_random_clip():
    model = create_model("tagclip", config=ROOT / "configs/tagclip_voc_inductive.yaml")
    assert model.config.num_prompts == 10 and model.head.trusty_token is not None
    assert not any(p.requires_grad for p in model.clip.parameters())


def test_print_model(capsys):
    assert main(["train", str(TINY), "--print-model"]) == 0
    out = capsys.readouterr().out
    assert "VisualPrompts" in out and "TagCLIPHead" in out and "trainable" in out
