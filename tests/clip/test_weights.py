"""``vocaseg.clip.load`` on every supported file format, checked against transformers' CLIP and
against the model that wrote the file; and the errors for bad files."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from vocaseg.clip import load
from vocaseg.clip.model import CLIP
from vocaseg.errors import CheckpointError

transformers = pytest.importorskip("transformers")

EOT = 49407


def _tokens(n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    tokens = torch.zeros(n, 77, dtype=torch.long)
    for row in range(n):
        length = 3 + 2 * row
        tokens[row, 0] = 49406
        tokens[row, 1 : length - 1] = torch.randint(1, 49000, (length - 2,), generator=g)
        tokens[row, length - 1] = EOT
    return tokens


def _features(out) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x wraps them in an output object."""
    return out if torch.is_tensor(out) else out.pooler_output


def _hf_clip(act: str, vision: tuple[int, int], text: tuple[int, int]):
    """Tiny random transformers CLIPModel: (width, heads) per tower, 2 layers, patch 16, image 32."""
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=text[0],
            intermediate_size=4 * text[0],
            num_attention_heads=text[1],
            num_hidden_layers=2,
            max_position_embeddings=77,
            hidden_act=act,
            eos_token_id=EOT,
        ),
        vision_config=dict(
            hidden_size=vision[0],
            intermediate_size=4 * vision[0],
            num_attention_heads=vision[1],
            num_hidden_layers=2,
            image_size=32,
            patch_size=16,
            hidden_act=act,
        ),
        projection_dim=32,
    )
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines, so their mapping is tested
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def _assert_matches_hf(ours: CLIP, hf) -> None:
    images = torch.randn(2, 3, 32, 32)
    tokens = _tokens()
    with torch.no_grad():
        ref_img = _features(hf.get_image_features(pixel_values=images))
        ref_txt = _features(hf.get_text_features(input_ids=tokens))
        assert ref_img.shape == (2, 32) and ref_txt.shape == (3, 32)
        assert (ours.encode_image(images) - ref_img).abs().max() <= 1e-4
        assert (ours.encode_text(tokens) - ref_txt).abs().max() <= 1e-4
        assert torch.allclose(ours.logit_scale, hf.logit_scale)


@pytest.mark.parametrize(
    "act, vision, text",
    [("quick_gelu", (128, 2), (64, 1)), ("gelu", (64, 4), (32, 2))],
)
def test_hf_folder_matches_transformers(tmp_path, act, vision, text):
    hf = _hf_clip(act, vision, text)
    hf.save_pretrained(tmp_path)
    ours = load(tmp_path)
    assert ours.config.activation == act
    assert (ours.config.vision_heads, ours.config.text_heads) == (vision[1], text[1])
    _assert_matches_hf(ours, hf)


def test_bare_hf_safetensors_infers_from_keys(tmp_path):
    """No config.json beside it: heads = width // 64, activation from the override."""
    hf = _hf_clip("gelu", (128, 2), (64, 1))
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, str(tmp_path / "clip.safetensors"))
    _assert_matches_hf(load(tmp_path / "clip.safetensors", activation="gelu"), hf)


def _conventional(model: CLIP) -> CLIP:
    """The same weights with conventional heads (width // 64), which files without a config imply."""
    config = replace(model.config, vision_heads=None, text_heads=None)
    out = CLIP(config).eval()
    out.load_state_dict(model.state_dict())
    return out


@pytest.fixture
def vit(tiny_vit_clip) -> CLIP:
    return _conventional(tiny_vit_clip)


def _assert_same(a: CLIP, b: CLIP, size: int) -> None:
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), b.encode_image(images))
        torch.testing.assert_close(a.encode_text(_tokens()), b.encode_text(_tokens()))
    assert a.config == b.config


def test_openai_state_dict_and_open_clip_formats(tmp_path, vit):
    state = vit.state_dict()
    torch.save(state, tmp_path / "openai.pt")
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, tmp_path / "open_clip_pytorch_model.bin")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "oc.safetensors"))
    for name in ("openai.pt", "open_clip_pytorch_model.bin", "oc.safetensors"):
        _assert_same(load(tmp_path / name), vit, 32)


def test_resnet_round_trip_keeps_batchnorm(tmp_path, tiny_rn_clip):
    rn = _conventional(tiny_rn_clip)
    torch.save(rn.state_dict(), tmp_path / "rn.pt")
    loaded = load(tmp_path / "rn.pt")
    assert loaded.config.vision_layers == (1, 1, 1, 1) and loaded.config.vision_heads == 8
    _assert_same(loaded, rn, 64)


class _Archive(torch.nn.Module):
    """Stands in for an OpenAI TorchScript archive: OpenAI keys + the three scalar extras."""

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        for name, child in clip.named_children():
            setattr(self, name, child)
        for name in ("positional_embedding", "text_projection", "logit_scale"):
            setattr(self, name, getattr(clip, name))
        self.register_buffer("input_resolution", torch.tensor(clip.config.image_size))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_fp16_archive(tmp_path, vit):
    with torch.no_grad():
        traced = torch.jit.trace(_Archive(vit), torch.randn(1, 3, 32, 32))
    torch.jit.save(traced.half(), str(tmp_path / "model.pt"))
    loaded = load(tmp_path / "model.pt")
    assert loaded.visual.proj.dtype == torch.float32
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # fp16 storage rounds the weights: close, not equal
        diff = loaded.encode_image(images) - vit.encode_image(images)
    assert diff.abs().max() < 2e-2


def test_known_archive_name_sets_activation(tmp_path, tiny_vit_clip):
    folder = tmp_path / "models--laion--CLIP-ViT-B-16-laion2B-s34B-b88K"
    folder.mkdir()
    torch.save(tiny_vit_clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    assert load(folder / "open_clip_pytorch_model.bin").config.activation == "gelu"
    torch.save(tiny_vit_clip.state_dict(), tmp_path / "other.bin")
    assert load(tmp_path / "other.bin").config.activation == "quick_gelu"
    assert load(tmp_path / "other.bin", activation="gelu").config.activation == "gelu"


def test_bad_inputs(tmp_path, tiny_vit_clip):
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "nope.pt")
    (tmp_path / "notes.txt").write_text("hello, not weights")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load(tmp_path / "notes.txt")
    torch.save(tiny_vit_clip.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load(tmp_path / "cut.pt")
    save_file(
        {k: v.contiguous() for k, v in tiny_vit_clip.state_dict().items()},
        str(tmp_path / "a.safetensors"),
    )
    data = (tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load(tmp_path / "cut.safetensors")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a CLIP checkpoint"):
        load(tmp_path / "other.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds none of"):
        load(tmp_path / "empty")


def test_mismatched_architecture_lists_keys(tmp_path, tiny_vit_clip):
    state = dict(tiny_vit_clip.state_dict())
    del state["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    state["visual.head.weight"] = torch.zeros(2)
    state["visual.ln_pre.weight"] = torch.ones(65)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        load(tmp_path / "bad.pt")
    message = str(info.value)
    assert "missing (1): visual.transformer.resblocks.1.mlp.c_fc.weight" in message
    assert "unexpected (1): visual.head.weight" in message
    assert "visual.ln_pre.weight (65,) != (64,)" in message
