"""Pure state-dict conversions between CLIP checkpoint layouts, and architecture inference.

docs/clip-weights.md §7 (OpenAI layout, inferring the architecture from tensors), §8 (Hugging Face
``CLIPModel`` <-> OpenAI key mapping) and §9 (HF ``config.json`` fields and defaults). Every
function takes and returns plain dicts and never touches files.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from vocaseg.clip.model import OPENAI_MEAN, OPENAI_STD, CLIPConfig

StateDict = dict[str, Tensor]

#: Scalars the OpenAI TorchScript archives carry beside the weights (docs/clip-weights.md §4.2).
OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")

# Per-block renames, HF -> OpenAI (q/k/v are fused separately).
_HF_BLOCK = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
# Whole-key renames, HF -> OpenAI (transposed projections are handled apart).
_HF_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_HF_TOWERS = {
    "text_model.encoder.layers.": "transformer.resblocks.",
    "vision_model.encoder.layers.": "visual.transformer.resblocks.",
}
_HF_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def unwrap_state_dict(obj: Any) -> StateDict:
    """The tensor dict inside a loaded checkpoint: follows ``{"state_dict": ...}`` (and
    ``"model"``) wrappers and strips DataParallel/DDP ``module.`` prefixes."""
    while isinstance(obj, dict):
        inner = next(
            (obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError("not a dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def is_hf_layout(state: StateDict) -> bool:
    """True for Hugging Face ``CLIPModel`` key names (``vision_model.*``, ``text_model.*``)."""
    return any(k.startswith(("vision_model.", "text_model.")) for k in state)


def hf_to_openai(state: StateDict) -> StateDict:
    """Hugging Face ``CLIPModel`` state dict -> OpenAI layout (docs/clip-weights.md §8).

    q/k/v projections are fused into ``in_proj_{weight,bias}`` (q, k, v order); ``text_projection``
    and ``visual_projection`` are transposed; ``position_ids`` buffers are dropped. Unknown keys are
    kept unchanged, so the strict key check can report them.
    """
    out: StateDict = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if key in _HF_IGNORED:
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif (prefix := next((p for p in _HF_TOWERS if key.startswith(p)), None)) is not None:
            index, rest = key[len(prefix) :].split(".", 1)
            block = f"{_HF_TOWERS[prefix]}{index}."
            m = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if m:
                qkv.setdefault(f"{block}attn.in_proj_{m[2]}", {})[m[1]] = value
                continue
            module, _, param = rest.rpartition(".")
            out[block + _HF_BLOCK.get(module, module) + "." + param] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            missing = sorted({"q", "k", "v"} - set(parts))
            raise ValueError(f"{key}: the HF checkpoint lacks the {missing} projection(s)")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def openai_to_hf(state: StateDict) -> StateDict:
    """OpenAI-layout ViT CLIP state dict -> Hugging Face ``CLIPModel`` layout (inverse of
    :func:`hf_to_openai`; ModifiedResNet has no HF counterpart). Drops the TorchScript extras."""
    top = {v: k for k, v in _HF_TOP.items()}
    towers = {v: k for k, v in _HF_TOWERS.items()}
    block_names = {v: k for k, v in _HF_BLOCK.items()}
    out: StateDict = {}
    for key, value in state.items():
        if key in OPENAI_EXTRAS:
            continue
        if key in top:
            out[top[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif (prefix := next((p for p in towers if key.startswith(p)), None)) is not None:
            index, rest = key[len(prefix) :].split(".", 1)
            block = f"{towers[prefix]}{index}."
            module, _, param = rest.rpartition(".")
            if module == "attn" and param.startswith("in_proj_"):
                for name, part in zip("qkv", value.chunk(3, dim=0)):
                    out[f"{block}self_attn.{name}_proj.{param[len('in_proj_') :]}"] = part
            else:
                out[block + block_names.get(module, module) + "." + param] = value
        else:
            out[key] = value
    return out


def drop_openai_extras(state: StateDict) -> StateDict:
    """Remove the TorchScript archive scalars ``input_resolution``/``context_length``/``vocab_size``."""
    return {k: v for k, v in state.items() if k not in OPENAI_EXTRAS}


def _count_blocks(state: StateDict, prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def infer_config(
    state: StateDict,
    activation: str = "quick_gelu",
    mean: tuple[float, float, float] = OPENAI_MEAN,
    std: tuple[float, float, float] = OPENAI_STD,
    vision_heads: int | None = None,
    text_heads: int | None = None,
) -> CLIPConfig:
    """Architecture of an OpenAI-layout state dict, from tensor shapes (docs/clip-weights.md §7).

    Heads cannot be read from shapes: they default to width // 64 (ResNet pool: 32 · width // 64).
    Raises ``KeyError`` naming the first required key that is absent.
    """

    def need(key: str) -> Tensor:
        if key not in state:
            raise KeyError(key)
        return state[key]

    text_proj = need("text_projection")
    common = dict(
        embed_dim=text_proj.shape[1],
        context_length=need("positional_embedding").shape[0],
        vocab_size=need("token_embedding.weight").shape[0],
        text_width=need("ln_final.weight").shape[0],
        text_layers=_count_blocks(state, "transformer.resblocks."),
        text_heads=text_heads,
        vision_heads=vision_heads,
        activation=activation,
        mean=mean,
        std=std,
    )
    if "visual.proj" in state:
        conv = need("visual.conv1.weight")  # [width, 3, patch, patch]
        grid = round((need("visual.positional_embedding").shape[0] - 1) ** 0.5)
        return CLIPConfig(
            image_size=conv.shape[-1] * grid,
            vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
            vision_width=conv.shape[0],
            vision_patch_size=conv.shape[-1],
            **common,
        )
    layers = tuple(_count_blocks(state, f"visual.layer{b}.") for b in range(1, 5))
    grid = round((need("visual.attnpool.positional_embedding").shape[0] - 1) ** 0.5)
    return CLIPConfig(
        image_size=grid * 32,
        vision_layers=layers,
        vision_width=need("visual.layer1.0.conv1.weight").shape[0],
        vision_patch_size=None,
        **common,
    )


def hf_config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """``infer_config`` keyword arguments from a HF ``config.json`` (docs/clip-weights.md §9): heads
    and the activation, with the class defaults (QuickGELU, 8 text / 12 vision heads) for omitted
    keys."""
    text = config.get("text_config") or {}
    vision = config.get("vision_config") or {}
    acts = {text.get("hidden_act", "quick_gelu"), vision.get("hidden_act", "quick_gelu")}
    if len(acts) > 1:
        raise ValueError(f"text and vision towers use different activations {sorted(acts)}")
    act = acts.pop()
    if act not in ("quick_gelu", "gelu"):
        raise ValueError(f"hidden_act {act!r} is not quick_gelu or gelu")
    return {
        "activation": act,
        "text_heads": int(text.get("num_attention_heads", 8)),
        "vision_heads": int(vision.get("num_attention_heads", 12)),
    }
