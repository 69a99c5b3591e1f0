"""Pure key conversions and architecture inference (docs/clip-weights.md §7, §8, §9)."""

from __future__ import annotations

import pytest
import torch

from vocaseg.clip.convert import (
    drop_openai_extras,
    hf_config_fields,
    hf_to_openai,
    infer_config,
    is_hf_layout,
    openai_to_hf,
    unwrap_state_dict,
)


def test_hf_round_trip_is_identity(tiny_vit_clip):
    state = tiny_vit_clip.state_dict()
    hf = openai_to_hf(state)
    assert is_hf_layout(hf) and not is_hf_layout(state)
    assert "vision_model.pre_layrnorm.weight" in hf  # HF's misspelling is in the key names
    assert "vision_model.encoder.layers.1.self_attn.q_proj.weight" in hf
    assert hf["visual_projection.weight"].shape == (32, 64)  # [embed, width]
    back = hf_to_openai(hf)
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_hf_qkv_fused_in_order_and_position_ids_dropped():
    w = {n: torch.full((4, 4), float(i)) for i, n in enumerate("qkv")}
    state = {f"text_model.encoder.layers.0.self_attn.{n}_proj.weight": t for n, t in w.items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    out = hf_to_openai(state)
    assert list(out) == ["transformer.resblocks.0.attn.in_proj_weight"]
    assert (
        out["transformer.resblocks.0.attn.in_proj_weight"][:, 0].tolist()
        == [0] * 4 + [1] * 4 + [2] * 4
    )
    del state["text_model.encoder.layers.0.self_attn.k_proj.weight"]
    with pytest.raises(ValueError, match="'k'"):
        hf_to_openai(state)


def test_unwrap_state_dict():
    t = torch.zeros(1)
    assert unwrap_state_dict({"a": t}) == {"a": t}
    assert unwrap_state_dict({"epoch": 1, "state_dict": {"module.a": t, "module.b": t}}) == {
        "a": t,
        "b": t,
    }
    assert unwrap_state_dict({"model": {"a": t}}) == {"a": t}
    for bad in ([t], {}, {"a": 1}):
        with pytest.raises(ValueError):
            unwrap_state_dict(bad)


def test_infer_config_from_tensors(tiny_vit_clip, tiny_rn_clip):
    for model in (tiny_vit_clip, tiny_rn_clip):
        state = dict(model.state_dict())
        state.update(input_resolution=torch.tensor(1), context_length=torch.tensor(77))
        config = infer_config(
            drop_openai_extras(state), vision_heads=model.config.vision_heads, text_heads=2
        )
        assert config == model.config
    with pytest.raises(KeyError, match="text_projection"):
        infer_config({"visual.proj": torch.zeros(1)})


def test_hf_config_fields_defaults_and_values():
    assert hf_config_fields({}) == {"activation": "quick_gelu", "text_heads": 8, "vision_heads": 12}
    config = {
        "text_config": {"hidden_act": "gelu", "num_attention_heads": 12},
        "vision_config": {"hidden_act": "gelu", "num_attention_heads": 16},
    }
    assert hf_config_fields(config) == {"activation": "gelu", "text_heads": 12, "vision_heads": 16}
    with pytest.raises(ValueError, match="different activations"):
        hf_config_fields({"text_config": {"hidden_act": "gelu"}})
