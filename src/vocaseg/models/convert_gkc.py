"""Checkpoints in the released GKC key layout (the official detectron2 code, yongliu20/GKC, and its
fuller copy Xujxyang/OpenTrans; docs/methods/gkc.md) -> vocaseg ``gkc`` model folders.

The released training model holds ``backbone.*`` (CLIP ResNet without ``attnpool``),
``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*`` (vocaseg uses the same names),
the final-point projections ``embed_proj.1`` and ``kd_proj``, the auxiliary points'
``aux_embed_porj_{i}.1`` and ``aux_kd_porj_{i}`` (sic), ``non_object_embedding``, ``logit_scale``,
``text_kd_logit_scale``, the frozen text tower ``text_encoder.*`` and the distillation teacher
``vision_clip.*``. vocaseg keeps the per-point projections as lists (``embed_proj.{j}.1``,
``kd_proj.{j}``, j = 9 the final point). Every step is a pure function:

- :func:`read_checkpoint`: the file -> state dict (``model`` unwrapped, ``module.`` stripped).
- :func:`convert_state_dict`: released keys -> vocaseg keys, the text tower apart, the rest dropped.
- :func:`infer_config`: GKC config values read off the tensors.
- :func:`convert_checkpoint`: all of it, with the text tower checked against the CLIP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vocaseg.errors import CheckpointError
from vocaseg.models.weights import load_into, read_foreign_checkpoint

_KEPT_PREFIXES = ("backbone.", "sem_seg_head.")
_KEPT_KEYS = ("non_object_embedding", "logit_scale", "text_kd_logit_scale")
_DROPPED = re.compile(
    r"^(vision_clip\.|grounding_head\.|criterion\.|empty_weight$|pixel_mean$|pixel_std$"
    r"|backbone\.attnpool\.|.*num_batches_tracked$)"
)
_AUX_EMBED = re.compile(r"^aux_embed_porj_(\d+)\.(.*)$")
_AUX_KD = re.compile(r"^aux_kd_porj_(\d+)\.(.*)$")
_CROSS = re.compile(r"^sem_seg_head\.predictor\.transformer_cross_attention_layers\.(\d+)\.")
_ENCODER = re.compile(r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.")


@dataclass
class GKCConversionReport:
    """What a conversion did: inferred settings, dropped keys, parameters left at their init."""

    config: dict[str, Any]
    dropped: list[str] = field(default_factory=list)
    unfilled: list[str] = field(default_factory=list)
    text_tower: str = "random"  # checked against --clip | from the checkpoint | random


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """The tensors of a released checkpoint (detectron2's ``{"model": ...}`` or a bare state
    dict), read through :func:`vocaseg.models.weights.read_foreign_checkpoint` (weights-only
    unless ``allow_pickle``)."""
    state, _ = read_foreign_checkpoint(path, allow_pickle)
    if not any(k.startswith("sem_seg_head.predictor.") for k in state):
        raise CheckpointError(
            f"{path} is not a GKC checkpoint (no sem_seg_head.predictor.* weights); for other "
            "methods use their own converter"
        )
    return state


def _count(state: dict[str, Tensor], pattern: re.Pattern) -> int:
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def infer_config(state: dict[str, Tensor], heads: int = 8) -> dict[str, Any]:
    """GKC config values read off the released tensors (``heads`` cannot be: it is given)."""
    try:
        queries, hidden = state["sem_seg_head.predictor.query_feat.weight"].shape
        dec_ffn = state["sem_seg_head.predictor.transformer_ffn_layers.0.linear1.weight"].shape[0]
        mask_dim = state["sem_seg_head.pixel_decoder.mask_features.weight"].shape[0]
        prefix = "sem_seg_head.pixel_decoder.transformer.encoder.layers.0."
        enc_ffn = state[prefix + "linear1.weight"].shape[0]
        offsets = state[prefix + "self_attn.sampling_offsets.weight"].shape[0]
        levels = state["sem_seg_head.pixel_decoder.transformer.level_embed"].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f"the checkpoint lacks {err.args[0]}; it is not a GKC checkpoint"
        ) from None
    return {
        "num_queries": int(queries),
        "hidden_dim": int(hidden),
        "mask_dim": int(mask_dim),
        "dec_layers": _count(state, _CROSS),
        "dec_ffn": int(dec_ffn),
        "enc_layers": _count(state, _ENCODER),
        "enc_ffn": int(enc_ffn),
        "enc_points": int(offsets) // (heads * levels * 2),
        "heads": heads,
    }


def convert_state_dict(
    state: dict[str, Tensor], dec_layers: int
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """Released keys -> (vocaseg model keys, the text tower's CLIP keys, dropped keys).

    ``dec_layers`` (9 as released) numbers the final point's projections. Unknown keys are an
    error."""
    converted: dict[str, Tensor] = {}
    text: dict[str, Tensor] = {}
    dropped: list[str] = []
    final = dec_layers
    for key, value in state.items():
        if _DROPPED.match(key):
            dropped.append(key)
        elif key.startswith(_KEPT_PREFIXES) or key in _KEPT_KEYS:
            converted[key] = value
        elif key.startswith("text_encoder."):
            text[key.removeprefix("text_encoder.")] = value
        elif key.startswith("embed_proj."):
            converted[f"embed_proj.{final}.{key.removeprefix('embed_proj.')}"] = value
        elif key.startswith("kd_proj."):
            converted[f"kd_proj.{final}.{key.removeprefix('kd_proj.')}"] = value
        elif match := _AUX_EMBED.match(key):
            converted[f"embed_proj.{match.group(1)}.{match.group(2)}"] = value
        elif match := _AUX_KD.match(key):
            converted[f"kd_proj.{match.group(1)}.{match.group(2)}"] = value
        else:
            raise CheckpointError(f"unknown key {key!r} in a GKC checkpoint")
    return converted, text, dropped


def _check_text_tower(clip: Any, text: dict[str, Tensor], path: str | Path) -> None:
    """The checkpoint's ``text_encoder.*`` must equal the CLIP's text tower."""
    own = clip.state_dict()
    differing = [
        key
        for key, value in text.items()
        if key not in own
        or own[key].shape != value.shape
        or not torch.allclose(own[key].float(), value.float(), atol=1e-3, rtol=1e-3)
    ]
    if differing:
        raise CheckpointError(
            f"{path}: its text_encoder differs from the CLIP given with --clip in {len(differing)} "
            f"tensors ({', '.join(differing[:4])}); pass the CLIP the model was trained with"
        )


def convert_checkpoint(
    path: str | Path,
    output: str | Path | None = None,
    clip_weights: str | None = None,
    allow_pickle: bool = False,
    overwrite: bool = False,
    self_contained: bool = False,
    **overrides: Any,
) -> tuple[Any, GKCConversionReport]:
    """Convert a released GKC checkpoint into a ``gkc`` model (saved to ``output`` when given).

    ``clip_weights``: the CLIP weights (a known name such as RN50, or a file) whose text tower the
    checkpoint's ``text_encoder`` must equal; the folder then refers to them. Without it the text
    tower is taken from the checkpoint (the folder is self-contained) or, absent, left random.
    ``overrides`` set config fields (e.g. ``clip`` as CLIPConfig fields for a custom size).
    """
    from vocaseg.models.folder import save_model
    from vocaseg.models.registry import create_model
    from vocaseg.models.towers import ClipSource

    state = read_checkpoint(path, allow_pickle)
    config = {**infer_config(state, overrides.get("heads", 8)), **overrides}
    converted, text, dropped = convert_state_dict(state, config["dec_layers"])
    model = create_model("gkc", config, pretrained=clip_weights or False)
    if clip_weights is not None:
        _check_text_tower(model.clip, text, path)
        text_tower = f"checked against {clip_weights}"
    elif text:
        load_into(model.clip, text, what=f"{path} text_encoder", required=list(text))
        model.clip_source = ClipSource("in-memory", model.clip.config.to_dict()).record()
        text_tower = "from the checkpoint"
    else:
        text_tower = "random"
    own = model.state_dict()
    converted = {k: v.to(own[k].dtype) if k in own else v for k, v in converted.items()}
    final = config["dec_layers"]
    optional = [f"embed_proj.{i}.*" for i in range(final)]
    optional += ["kd_proj.*", "text_kd_logit_scale", "*num_batches_tracked"]
    report = load_into(
        model,
        converted,
        what=str(path),
        required=list(model.saved_state_dict()),
        allow_missing=optional,
    )
    result = GKCConversionReport(
        config=config, dropped=dropped, unfilled=report.missing, text_tower=text_tower
    )
    if output is not None:
        save_model(model, output, self_contained=self_contained, overwrite=overwrite)
    return model, result
