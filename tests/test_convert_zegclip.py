"""Released ZegCLIP / official-TagCLIP checkpoints -> vocaseg model folders
(docs/methods/tagclip.md §8): key table at ViT-B/16 size, strict loading of a synthetic
checkpoint in the released layout, warm start of TagCLIP from ZegCLIP, and the errors."""

import pytest
import torch

from vocaseg.cli.main import main
from vocaseg.clip.model import CLIP, CLIPConfig
from vocaseg.errors import CheckpointError
from vocaseg.models.convert_zegclip import convert_checkpoint, convert_state_dict
from vocaseg.models.folder import load_model
from vocaseg.models.registry import create_model
from vocaseg.models.weights import load_into, read_state
from vocaseg.text.vocab import Vocabulary

TINY = dict(
    embed_dim=32, image_size=32, vision_layers=2, vision_width=64, vision_patch_size=16,
    vision_heads=4, text_width=32, text_layers=1, text_heads=2,
)  # fmt: skip


def released_layout(width, layers, embed, prompts, grid, ffn, tagclip=False, patch=16):
    """Key -> shape of a released checkpoint, written out from docs/methods/tagclip.md §8."""
    shapes = {
        "backbone.conv1.weight": (width, 3, patch, patch),
        "backbone.class_embedding": (width,),
        "backbone.positional_embedding": (grid * grid + 1, width),
        "backbone.ln_pre.weight": (width,), "backbone.ln_pre.bias": (width,),
        "backbone.ln_post.weight": (width,), "backbone.ln_post.bias": (width,),
        "backbone.proj": (width, embed),
        "backbone.prompt_embeddings": (1, prompts, width),
        "backbone.deep_prompt_embeddings": (layers - 1, prompts, width),
        "backbone.prompt_proj.weight": (width, width), "backbone.prompt_proj.bias": (width,),
        "backbone.prompt_norm.weight": (width,), "backbone.prompt_norm.bias": (width,),
        "decode_head.loss_decode.criterion.empty_weight": (16,),
        "text_encoder.token_embedding.weight": (10, embed),
    }  # fmt: skip
    for i in range(layers):
        block = f"backbone.transformer.resblocks.{i}."
        for norm in ("ln_1", "ln_2"):
            shapes[f"{block}{norm}.weight"] = shapes[f"{block}{norm}.bias"] = (width,)
        shapes[f"{block}attn.in_proj_weight"] = (3 * width, width)
        shapes[f"{block}attn.in_proj_bias"] = (3 * width,)
        shapes[f"{block}attn.out_proj.weight"] = (width, width)
        shapes[f"{block}attn.out_proj.bias"] = (width,)
        shapes[f"{block}mlp.c_fc.weight"], shapes[f"{block}mlp.c_fc.bias"] = (4 * width, width), (4 * width,)  # fmt: skip
        shapes[f"{block}mlp.c_proj.weight"], shapes[f"{block}mlp.c_proj.bias"] = (width, 4 * width), (width,)  # fmt: skip
    head = "decode_head.relationship_discriptor.q_proj" if tagclip else "decode_head.q_proj"
    shapes[f"{head}.weight"], shapes[f"{head}.bias"] = (embed, 2 * embed), (embed,)
    if tagclip:
        shapes["decode_head.disc_token"] = (1, embed)
    decoder = "decode_head.decoder.layers" if tagclip else "decode_head.decoder_1.layers"
    for i in range(3):
        layer = f"{decoder}.{i}."
        for part in ("q", "k", "v", "proj"):
            shapes[f"{layer}multihead_attn.{part}.weight"] = (embed, embed)
            shapes[f"{layer}multihead_attn.{part}.bias"] = (embed,)
        for norm in ("norm1", "norm2", "norm3"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (embed,)
        shapes[f"{layer}linear1.weight"], shapes[f"{layer}linear1.bias"] = (ffn, embed), (ffn,)
        shapes[f"{layer}linear2.weight"], shapes[f"{layer}linear2.bias"] = (embed, ffn), (embed,)
        shapes[f"{layer}self_attn.in_proj_weight"] = (3 * embed, embed)
        shapes[f"{layer}self_attn.in_proj_bias"] = (3 * embed,)
        shapes[f"{layer}self_attn.out_proj.weight"] = (embed, embed)
        shapes[f"{layer}self_attn.out_proj.bias"] = (embed,)
    return shapes


def write_checkpoint(path, tagclip=False, **changes):
    shapes = released_layout(64, 2, 32, prompts=3, grid=4, ffn=48, tagclip=tagclip)
    generator = torch.Generator().manual_seed(1)
    state = {k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}
    state.update(changes)
    state = {f"module.{k}": v for k, v in state.items()}
    meta = {"CLASSES": [f"cls{i}" for i in range(15)], "iter": 20000}
    torch.save({"meta": meta, "state_dict": state, "optimizer": {}}, path)
    return {k.removeprefix("module."): v for k, v in state.items()}


def tiny_clip():
    torch.manual_seed(0)
    return CLIP(CLIPConfig(**TINY)).eval()


def test_key_table_matches_model_at_vit_b16_size():
    with torch.device("meta"):
        for tagclip in (False, True):
            shapes = released_layout(768, 12, 512, prompts=10, grid=32, ffn=2048, tagclip=tagclip)
            converted, dropped = convert_state_dict({k: torch.empty(s) for k, s in shapes.items()})
            clip = CLIP(CLIPConfig(512, 224, 12, 768, 16, 512, 1))
            model = create_model("tagclip" if tagclip else "zegclip", clip=clip)
            own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            assert {k: tuple(v.shape) for k, v in converted.items()} == {
                k: s
                for k, s in own.items()
                if not k.startswith("clip.") or k.startswith("clip.visual.")
            }
            assert "decode_head.loss_decode.criterion.empty_weight" in dropped


def test_zegclip_checkpoint_fills_the_preset_and_round_trips(tmp_path):
    state = write_checkpoint(tmp_path / "zegclip.pth")
    model, report = convert_checkpoint(tmp_path / "zegclip.pth", tmp_path / "out", clip=tiny_clip())
    assert report.method == "zegclip" and report.unfilled == []
    assert report.config["num_prompts"] == 3 and report.num_train_classes == 15
    assert report.classes[:2] == ["cls0", "cls1"]
    params = model.state_dict()
    assert torch.equal(params["vpt.deep"], state["backbone.deep_prompt_embeddings"])
    assert torch.equal(
        params["head.blocks.1.cross_attn.k.weight"],
        state["decode_head.decoder_1.layers.1.multihead_attn.k.weight"],
    )
    assert torch.equal(params["head.blocks.2.norm_ffn.bias"], state["decode_head.decoder_1.layers.2.norm3.bias"])  # fmt: skip
    loaded = load_model(tmp_path / "out")
    assert loaded.name == "zegclip"
    images, text = torch.randn(1, 3, 64, 64), torch.randn(4, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(images, text), model.eval()(images, text))


def test_tagclip_checkpoint_and_warm_start_from_zegclip(tmp_path):
    state = write_checkpoint(tmp_path / "tag.pth", tagclip=True)
    model, report = convert_checkpoint(tmp_path / "tag.pth", clip=tiny_clip())
    assert report.method == "tagclip" and report.unfilled == []
    assert torch.equal(model.head.trusty_token.detach(), state["decode_head.disc_token"])
    assert torch.equal(
        model.head.trusty_learner.attn.in_proj_weight.detach(),
        state["decode_head.decoder.layers.0.self_attn.in_proj_weight"],
    )

    write_checkpoint(tmp_path / "zeg.pth")
    zeg, _ = convert_checkpoint(tmp_path / "zeg.pth", tmp_path / "zeg", clip=tiny_clip())
    tag = create_model("tagclip", clip=tiny_clip(), pos_grid=4, num_prompts=3, head_ffn=48)
    state, record = read_state(tmp_path / "zeg")
    assert record["method"] == "zegclip"
    with pytest.raises(CheckpointError, match=r"missing .*head\.trusty_token"):
        load_into(tag, state, what="zeg", required=list(tag.saved_state_dict()))
    report = load_into(
        tag,
        state,
        what="zeg",
        required=list(tag.saved_state_dict()),
        allow_missing=["head.trusty_*"],
    )
    assert {k.split(".")[1] for k in report.missing} == {"trusty_token", "trusty_learner"}
    assert torch.equal(tag.state_dict()["vpt.shallow"], zeg.state_dict()["vpt.shallow"])


def test_errors(tmp_path, capsys):
    torch.save(
        {"state_dict": {"backbone.layer1.0.conv1.weight": torch.zeros(1)}}, tmp_path / "rn.pth"
    )
    with pytest.raises(CheckpointError, match="not a ZegCLIP/TagCLIP checkpoint"):
        convert_checkpoint(tmp_path / "rn.pth", clip=tiny_clip())
    write_checkpoint(tmp_path / "odd.pth", **{"decode_head.class_embed.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"decode_head\.class_embed\.weight"):
        convert_checkpoint(tmp_path / "odd.pth", clip=tiny_clip())
    write_checkpoint(tmp_path / "p8.pth", **{"backbone.conv1.weight": torch.zeros(64, 3, 8, 8)})
    with pytest.raises(CheckpointError, match=r"clip\.visual\.conv1\.weight \(64, 3, 8, 8\) vs"):
        convert_checkpoint(tmp_path / "p8.pth", clip=tiny_clip())
    code = main(["convert", "zegclip", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: checkpoint not found") and err.count("\n") == 1


COCO_INDUCTIVE = """model = dict(decode_head=dict(
    load_text_embedding='configs/_base_/datasets/text_embedding/coco_multi.npy',
    base_class=[0, 1, 2], novel_class=[3, 4], both_class=[0, 1, 2, 3, 4]))"""


@pytest.mark.parametrize(
    "config, expected",
    [
        (COCO_INDUCTIVE, {"templates": "coco15", "setting": "inductive"}),
        (
            COCO_INDUCTIVE + "\nmodel = dict(decode_head=dict(self_training=True))",
            {"templates": "coco15", "setting": "transductive"},
        ),
        (
            "load_text_embedding='x/voc12_single.npy'\nnovel_class = []",
            {"templates": "voc_single", "setting": "supervised"},
        ),
    ],
)
def test_recipe_is_inferred_from_the_stored_config(tmp_path, capsys, config, expected):
    state = write_checkpoint(tmp_path / "z.pth")
    meta = {"CLASSES": [f"cls{i}" for i in range(15)], "config": config}
    torch.save({"meta": meta, "state_dict": state}, tmp_path / "z.pth")
    model, report = convert_checkpoint(tmp_path / "z.pth", clip=tiny_clip())
    for key, value in expected.items():
        assert report.config[key] == value and getattr(model.config, key) == value
    # A transductive (or supervised) model gets no -0.1 seen calibration at inference.
    vocab = Vocabulary.from_names(["a", "b"], seen=[0])
    logits = torch.zeros(1, 2, 2, 2)
    scores = model.window_output(logits, vocab, model.background)
    calibrated = scores[:, 0].mean().item() < scores[:, 1].mean().item()
    assert calibrated == (expected["setting"] == "inductive")
    model, report = convert_checkpoint(tmp_path / "z.pth", clip=tiny_clip(), setting="inductive")
    assert report.config["setting"] == "inductive"  # --set wins over what was inferred
    torch.save(tiny_clip().state_dict(), tmp_path / "clip.pt")
    argv = ["convert", "zegclip", str(tmp_path / "z.pth"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--clip", str(tmp_path / "clip.pt")]) == 0
    assert "inferred from the checkpoint's stored config" in capsys.readouterr().out
    assert main([*argv, "--clip", str(tmp_path / "clip.pt")]) == 2
    assert "already holds a model" in capsys.readouterr().err
