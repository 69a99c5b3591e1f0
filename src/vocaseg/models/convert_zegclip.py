"""Released ZegCLIP checkpoints (and checkpoints of the official TagCLIP code) -> vocaseg model
folders (the key table: docs/methods/tagclip.md).

vocaseg keeps CLIP's own parameter names inside the model (``clip.visual.conv1``,
``clip.visual.transformer.resblocks.{i}``, ...), so the official backbone keys map onto them with
the ``backbone.`` prefix replaced by ``clip.visual.``; the prompts map onto ``vpt.*`` and the
decode head onto ``head.*``. Every conversion step is a pure function:

- :func:`read_checkpoint`: the mmcv dict -> (state dict without ``module.``, meta), weights-only.
- :func:`convert_state_dict`: official keys -> vocaseg keys (unknown keys are an error).
- :func:`infer_config`: method name and config values read off the tensors.
- :func:`convert_checkpoint`: all of it, strict shape checks, the list of unfilled parameters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vocaseg.errors import CheckpointError
from vocaseg.models.weights import load_into, read_foreign_checkpoint

_BACKBONE_RENAMES = {
    "prompt_embeddings": "vpt.shallow",
    "deep_prompt_embeddings": "vpt.deep",
}
_BACKBONE_PREFIX_RENAMES = {"prompt_proj.": "vpt.proj.", "prompt_norm.": "vpt.norm."}
_LAYER_RENAMES = {
    "multihead_attn.": "cross_attn.",
    "norm2.": "norm_attn.",
    "norm3.": "norm_ffn.",
    "linear1.": "ffn.fc1.",
    "linear2.": "ffn.fc2.",
}
_LAYER = re.compile(r"^decode_head\.(?:decoder_1|decoder)\.layers\.(\d+)\.(.*)$")
_DROPPED = re.compile(r"^(text_encoder\.|decode_head\.loss_decode\.)")


@dataclass
class ConversionReport:
    """What a conversion did: inferred settings, dropped keys, parameters left unfilled."""

    method: str
    config: dict[str, Any]
    classes: list[str] | None
    num_train_classes: int | None
    dropped: list[str] = field(default_factory=list)
    unfilled: list[str] = field(default_factory=list)
    frozen_mismatches: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> tuple[dict[str, Tensor], dict]:
    """An mmcv checkpoint (``{"meta", "state_dict", "optimizer"}``) -> (state dict, meta), read
    through :func:`vocaseg.models.weights.read_foreign_checkpoint` (weights-only unless
    ``allow_pickle``)."""
    state, wrapper = read_foreign_checkpoint(path, allow_pickle)
    if not any(k.startswith("backbone.") for k in state) or not any(
        k.startswith("decode_head.") for k in state
    ):
        raise CheckpointError(
            f"{path} is not a ZegCLIP/TagCLIP checkpoint (no backbone.* and decode_head.* "
            "weights); for other methods use their own loader"
        )
    return state, wrapper.get("meta") or {}


def _rename(key: str, self_attn_layer0: bool) -> str | None:
    """vocaseg name of official ``key``; None when the tensor is dropped."""
    if _DROPPED.match(key):
        return None
    if key.startswith("backbone."):
        name = key.removeprefix("backbone.")
        if name in _BACKBONE_RENAMES:
            return _BACKBONE_RENAMES[name]
        for old, new in _BACKBONE_PREFIX_RENAMES.items():
            if name.startswith(old):
                return new + name.removeprefix(old)
        return "clip.visual." + name
    if key == "decode_head.disc_token":
        return "head.trusty_token"
    for prefix in ("decode_head.relationship_discriptor.q_proj.", "decode_head.q_proj."):
        if key.startswith(prefix):
            return "head.descriptor.proj." + key.removeprefix(prefix)
    match = _LAYER.match(key)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        if rest.startswith(("self_attn.", "norm1.")):
            if index == 0 and self_attn_layer0:  # TagCLIP's trusty learner
                return "head.trusty_learner." + rest.replace("self_attn.", "attn.").replace(
                    "norm1.", "norm."
                )
            return None  # ZegCLIP's allocated-but-unused self-attention
        for old, new in _LAYER_RENAMES.items():
            if rest.startswith(old):
                return f"head.blocks.{index}.{new}{rest.removeprefix(old)}"
    raise CheckpointError(f"unknown key {key!r} in a ZegCLIP/TagCLIP checkpoint")


def is_tagclip(state: dict[str, Tensor]) -> bool:
    """Official TagCLIP code (``relationship_discriptor``, ``decoder.layers``) vs ZegCLIP."""
    return any(k.startswith("decode_head.relationship_discriptor.") for k in state)


def convert_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Official keys -> vocaseg keys. Returns the converted dict and the dropped official keys."""
    learner = is_tagclip(state)
    converted, dropped = {}, []
    for key, value in state.items():
        name = _rename(key, learner)
        if name is None:
            dropped.append(key)
        else:
            converted[name] = value
    return converted, dropped


def infer_config(state: dict[str, Tensor], meta: dict) -> tuple[str, dict[str, Any]]:
    """Method name and config values read off the official tensors (N, grid, τ, learner, head)."""
    try:
        prompts = state["backbone.prompt_embeddings"]
        fc1 = next(v for k, v in state.items() if k.endswith("layers.0.linear1.weight"))
    except (KeyError, StopIteration):
        raise CheckpointError(
            "the checkpoint lacks backbone.prompt_embeddings or the decode-head layers; "
            "it is not a ZegCLIP/TagCLIP checkpoint"
        ) from None
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    tag = is_tagclip(state)
    config = {
        "num_prompts": int(prompts.shape[1]),
        "pos_grid": math.isqrt(state["backbone.positional_embedding"].shape[0] - 1),
        "head_depth": len(layers),
        "head_ffn": int(fc1.shape[0]),
        "trusty_token": "decode_head.disc_token" in state,
        "trusty_learner": tag and any(".layers.0.self_attn." in k for k in state),
    }
    method = "tagclip" if config["trusty_token"] or config["trusty_learner"] else "zegclip"
    config.update(infer_recipe(meta, state))
    return method, config


#: Text-embedding files of the released configs -> vocaseg template sets (ZegCLIP's
#: get_embedding.ipynb; the Context file is not published, its 15 templates are assumed).
EMBEDDING_TEMPLATES = {
    "coco_multi": "coco15",
    "context_multi": "coco15",
    "voc12_single": "voc_single",
    "coco_single": "voc_single",
}


def infer_recipe(meta: dict, state: dict[str, Tensor]) -> dict[str, Any]:
    """Templates, setting and trusty weighting read off the mmcv config text a released
    checkpoint stores in ``meta["config"]``: the text-embedding file (``coco_multi.npy`` -> the
    15 COCO templates, ``voc12_single.npy`` -> the single VOC template), ``self_training=True``
    -> transductive, an empty ``novel_class`` (every class seen) -> supervised,
    ``eval_disc_weight`` -> trusty weighting. Without a stored config: the embedding count of
    the no-object weight (> 100 classes -> COCO's 15 templates)."""
    text = meta.get("config") if isinstance(meta.get("config"), str) else ""
    found: dict[str, Any] = {}
    embedding = re.search(r"(\w+)\.npy", text)
    if embedding and embedding.group(1) in EMBEDDING_TEMPLATES:
        found["templates"] = EMBEDDING_TEMPLATES[embedding.group(1)]
    elif not text:
        empty = state.get("decode_head.loss_decode.criterion.empty_weight")
        if empty is not None:
            found["templates"] = "coco15" if empty.shape[0] > 100 else "voc_single"
    if re.search(r"self_training\s*=\s*True", text):
        found["setting"] = "transductive"
    elif re.search(r"novel_class\s*=\s*\[\s*\]", text):
        found["setting"] = "supervised"
    elif text:
        found["setting"] = "inductive"
    weighting = re.search(r"eval_disc_weight\s*=\s*(True|False)", text)
    if weighting and "decode_head.disc_token" in state:
        found["trusty_weighting"] = "both" if weighting.group(1) == "True" else "none"
    return found


def convert_checkpoint(
    path: str | Path,
    output: str | Path | None = None,
    clip: Any = None,
    allow_pickle: bool = False,
    overwrite: bool = False,
    self_contained: bool = False,
    **overrides: Any,
) -> tuple[Any, ConversionReport]:
    """Convert a released checkpoint into a vocaseg model (saved to ``output`` when given).

    ``clip``: the CLIP whose text tower (absent from the checkpoint) the model uses: a ``CLIP``, a
    name or file for :func:`vocaseg.clip.load`, or None (random, ViT-B/16; listed as unfilled). When the CLIP
    has pretrained weights, the checkpoint's frozen visual tensors are compared with it and
    differences are listed. The model folder refers to ``clip`` when the checkpoint's frozen
    tensors equal it bit for bit, else it is self-contained. ``overrides`` set config fields
    (e.g. ``setting``); ``overwrite`` allows replacing an existing model folder;
    ``self_contained`` stores the frozen tensors even when they equal ``clip``.
    """
    from vocaseg.models.folder import save_model
    from vocaseg.models.registry import create_model

    state, meta = read_checkpoint(path, allow_pickle)
    method, config = infer_config(state, meta)
    pretrained = clip is not None
    settings = {**config, **overrides}
    if isinstance(clip, torch.nn.Module):
        model = create_model(method, settings, clip=clip)
    else:
        model = create_model(method, settings, pretrained=clip if pretrained else False)
    reference = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("clip.")}
    converted, dropped = convert_state_dict(state)
    own = model.state_dict()
    converted = {k: v.to(own[k].dtype) if k in own else v for k, v in converted.items()}
    load_into(
        model,
        converted,
        what=str(path),
        required=list(model.saved_state_dict()),
        allow_missing=["*"],  # reported as unfilled below
    )
    unfilled = sorted(k for k in own if k not in converted)
    if not pretrained:
        unfilled = [k for k in unfilled if not k.startswith("clip.")] + ["clip.* text tower"]
    else:
        unfilled = [k for k in unfilled if not k.startswith("clip.")]
    mismatches, identical = [], True
    for key, value in converted.items():
        if key in reference:
            identical = identical and torch.equal(value, reference[key])
            if pretrained and not torch.allclose(
                value.float(), reference[key].float(), atol=1e-2, rtol=1e-2
            ):
                mismatches.append(key)
    classes = meta.get("CLASSES")
    empty = state.get("decode_head.loss_decode.criterion.empty_weight")
    report = ConversionReport(
        method=method,
        config={**config, **overrides},
        classes=list(classes) if classes is not None else None,
        num_train_classes=int(empty.shape[0]) - 1 if empty is not None else None,
        dropped=dropped,
        unfilled=unfilled,
        frozen_mismatches=mismatches,
    )
    if output is not None:
        contained = self_contained or not identical
        save_model(model, output, self_contained=contained, overwrite=overwrite)
    return model, report
