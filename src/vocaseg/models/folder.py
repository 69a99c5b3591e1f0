"""Model folders: ``save_model`` and ``load_model``.

A model folder holds ``model.json`` (format, method, method config, the CLIP reference, how it was
trained, vocaseg version) and ``model.safetensors`` (the method's own parameters and buffers).
The frozen CLIP is not copied: ``model.json`` names its weights (a known name, or a file path with
its SHA-256) and the SHA-256 of the frozen tensors, and :func:`load_model` rebuilds and checks them.
A *self-contained* folder also holds the frozen tensors (for offline deployment); models on random
or in-memory CLIP weights are always saved self-contained, since nothing could rebuild them.
Folders written before this format (the whole state dict, ``model.json`` without ``format``) load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.hashing import file_sha256
from vocaseg.io import atomic_path, write_json
from vocaseg.models.base import SegmentationModel
from vocaseg.models.registry import create_model, get_entry
from vocaseg.models.towers import ClipSource, build_towers, load_clip
from vocaseg.models.weights import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    load_into,
    read_model_record,
    read_safetensors,
)

FORMAT = "vocaseg-model/2"


def save_model(
    model: SegmentationModel,
    path: str | os.PathLike,
    *,
    self_contained: bool = False,
    overwrite: bool = False,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a model folder; each file atomically.

    ``self_contained`` also stores the frozen CLIP tensors; ``overwrite`` allows replacing an
    existing model folder; ``training`` (e.g. the zero-shot split) is recorded in ``model.json``.
    """
    from safetensors.torch import save_file

    from vocaseg import __version__

    if not model.name:
        raise ConfigError(
            "this model has no registry name; build it with vocaseg.create_model(name, ...) "
            "so that load_model can rebuild it"
        )
    folder = Path(path)
    if (folder / MODEL_JSON).exists() and not overwrite:
        raise CheckpointError(
            f"{folder} already holds a model; pass --overwrite (overwrite=True) to replace it "
            "or choose another folder"
        )
    source = ClipSource.from_record(model.clip_source) if model.clip_source else None
    include_frozen = self_contained or source is None or not source.is_reference
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.saved_state_dict(include_frozen=include_frozen).items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    record = {
        "format": FORMAT,
        "method": model.name,
        "config": model.config_dict(),
        "clip": None
        if source is None
        else {**source.record(), "frozen_sha256": model.frozen_state_sha256()},
        "self_contained": include_frozen,
        "training": training,
        "vocaseg_version": __version__,
    }
    write_json(folder / MODEL_JSON, record)
    return folder


def load_model(
    path: str | os.PathLike,
    device: str = "cpu",
    *,
    clip_weights: str | os.PathLike | None = None,
    **overrides: Any,
) -> SegmentationModel:
    """Load a model folder written by :func:`save_model`, ``vocaseg train`` or ``vocaseg convert``.

    The frozen CLIP is rebuilt from the folder's reference (or ``clip_weights``, for a moved
    file); ``overrides`` change config values (inference settings, templates) at load.
    """
    folder = Path(path)
    record = read_model_record(folder)
    state = read_safetensors(folder / MODEL_WEIGHTS)
    method = record["method"]
    config = {**(record.get("config") or {}), **overrides}
    clip_record = record.get("clip")
    if record.get("format") != FORMAT:  # the first format: the whole state dict
        towers = None
        if clip_record:
            architecture = clip_record.get("architecture", clip_record)
            clip, source = load_clip("random", architecture)
            towers = _towers(method, config, clip, source)
        model = create_model(method, config, clip=towers)
        load_into(model, state, what=str(folder / MODEL_WEIGHTS))
        return model.to(device).eval()
    if clip_record is None:
        model = create_model(method, config)
    elif record.get("self_contained"):
        clip, _ = load_clip("random", clip_record["architecture"])
        source = ClipSource.from_record(clip_record)
        model = create_model(method, config, clip=_towers(method, config, clip, source))
    else:
        clip, source = _reference_clip(folder, clip_record, clip_weights)
        model = create_model(method, config, clip=_towers(method, config, clip, source))
        expected = clip_record.get("frozen_sha256") or {}
        actual = model.frozen_state_sha256()
        differ = [part for part in expected if part in actual and actual[part] != expected[part]]
        if differ:
            raise CheckpointError(
                f"the CLIP weights {source.weights} differ from those {folder} was trained on "
                f"({', '.join(differ)}); pass the original file with --weights PATH"
            )
    required = list(model.saved_state_dict(include_frozen=bool(record.get("self_contained"))))
    absent = [k for k in required if k not in state]
    if absent and all(".visual." in k for k in absent):
        raise CheckpointError(
            f"{folder} was saved without CLIP's image tower, which these settings need at "
            "inference (e.g. two_stage); save it referring to its CLIP weights instead of "
            "--self-contained, or drop the setting"
        )
    load_into(model, state, what=str(folder / MODEL_WEIGHTS), required=required)
    model.training_record = record.get("training")
    return model.to(device).eval()


def _towers(method: str, config: dict[str, Any], clip: Any, source: ClipSource) -> Any:
    from vocaseg.models.registry import build_config

    cfg = build_config(method, config)
    return build_towers(get_entry(method).tower_uses(cfg), None, clip=clip, source=source)


def _reference_clip(
    folder: Path, clip_record: dict[str, Any], clip_weights: str | os.PathLike | None
) -> tuple[Any, ClipSource]:
    """The CLIP named by a model folder's reference, checked against its file hash."""
    weights = str(clip_weights) if clip_weights is not None else clip_record["weights"]
    expected = clip_record.get("sha256")
    local = Path(weights).expanduser()
    if clip_weights is None and expected and local.is_absolute():
        if not local.is_file():
            raise CheckpointError(
                f"{folder} refers to CLIP weights {weights} (sha256 {expected[:12]}…), which are "
                "not there; pass that file with --weights PATH (clip_weights=), or re-save the "
                "model with --self-contained"
            )
        if file_sha256(local) != expected:
            raise CheckpointError(
                f"{weights} has changed since {folder} was saved (sha256 differs); pass the "
                "original file with --weights PATH"
            )
    return load_clip(weights, clip_record.get("architecture"))
