"""Method registry: ``list_models``, ``create_model`` and model folders (``save_model``/``load_model``).

A model folder holds ``model.json`` (method name, method config, CLIP architecture, vocaseg version)
and ``model.safetensors`` (the full state dict), so it rebuilds without the original config files
and loads without executing pickled code.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocaseg.config import from_dict, load_yaml, to_dict
from vocaseg.errors import CheckpointError, ConfigError, UserError
from vocaseg.io import atomic_path, write_json
from vocaseg.models.base import SegmentationModel

# Modules that register methods when imported.
_METHOD_MODULES = ["vocaseg.models.tagclip", "vocaseg.models.maskclip"]

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_class: type
    builder: Callable[[Any, Any], SegmentationModel]  # builder(config, clip) -> model
    description: str
    preset: dict[
        str, Any
    ]  # config values this name sets (e.g. zegclip = tagclip without the token)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, config_class: type, description: str, **preset: Any
) -> Callable[[Callable[[Any, Any], SegmentationModel]], Callable[[Any, Any], SegmentationModel]]:
    """Decorator registering ``builder(config, clip) -> SegmentationModel`` under ``name``."""

    def decorate(builder: Callable[[Any, Any], SegmentationModel]):
        _REGISTRY[name] = ModelEntry(name, config_class, builder, description, dict(preset))
        return builder

    return decorate


def _load_registry() -> dict[str, ModelEntry]:
    for module in _METHOD_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_load_registry())


def get_entry(name: str) -> ModelEntry:
    registry = _load_registry()
    if name not in registry:
        raise UserError(
            f"unknown model {name!r}; available: {', '.join(sorted(registry))} (see 'vocaseg models')"
        )
    return registry[name]


def build_config(name: str, config: Any = None, **overrides: Any) -> Any:
    """The typed config for method ``name``: preset, then ``config`` (path, dict or dataclass), then
    keyword overrides. A YAML training config contributes its ``model:`` section."""
    entry = get_entry(name)
    where = f"model {name!r}"
    if config is None:
        data: dict[str, Any] = {}
    elif dataclasses.is_dataclass(config):
        data = to_dict(config)
    elif isinstance(config, (str, Path)):
        where = f"{config}: model"
        data = load_yaml(config)
        data = data.get("model", data)
    elif isinstance(config, dict):
        data = dict(config.get("model", config))
    else:
        raise ConfigError(f"config must be a YAML path, a dict or a dataclass, not {type(config)}")
    data = {k: v for k, v in data.items() if k not in ("name", "method")}
    merged = {**entry.preset, **data, **overrides}
    return from_dict(entry.config_class, merged, where)


def create_model(
    name: str,
    config: Any = None,
    clip_weights: str | Path | None = None,
    clip: Any = None,
    **overrides: Any,
) -> SegmentationModel:
    """Build method ``name``.

    ``config``: a YAML file (its ``model:`` section), a dict or a config dataclass; keyword
    ``overrides`` set single fields. The CLIP it stands on is ``clip`` if given, else loaded from
    ``clip_weights`` (a known name or a file, see ``vocaseg.clip.load``), else built with random
    weights in the architecture the config's ``clip`` field names (no download). A method whose
    config sets ``clip: null`` (e.g. a student trained without CLIP) gets ``clip=None``.
    """
    from vocaseg import clip as clip_lib

    entry = get_entry(name)
    cfg = build_config(name, config, **overrides)
    if clip is None and clip_weights is not None:
        clip = clip_lib.load(clip_weights)
    elif clip is None and getattr(cfg, "clip", "ViT-B/16") is not None:
        clip = clip_lib.build(getattr(cfg, "clip", "ViT-B/16"))
    model = entry.builder(cfg, clip)
    model.name = name
    return model


def save_model(model: SegmentationModel, path: str | Path) -> Path:
    """Write ``model`` as a model folder (config JSON + safetensors), atomically per file."""
    from safetensors.torch import save_file

    from vocaseg import __version__

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / MODEL_WEIGHTS) as tmp:
        save_file(state, str(tmp))
    record = {
        "method": model.name,
        "config": model.config_dict(),
        "clip": to_dict(model.clip.config) if hasattr(model, "clip") else None,
        "vocaseg_version": __version__,
    }
    write_json(folder / MODEL_JSON, record)
    return folder


def load_model(path: str | Path, device: str = "cpu") -> SegmentationModel:
    """Load a model folder written by :func:`save_model` (or ``vocaseg convert``)."""
    from safetensors.torch import load_file

    from vocaseg import clip as clip_lib

    folder = Path(path)
    meta_path = folder / MODEL_JSON
    if not meta_path.is_file():
        raise CheckpointError(
            f"{folder} is not a vocaseg model folder (no {MODEL_JSON}); "
            "pass a folder written by 'vocaseg train' or 'vocaseg convert'"
        )
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
        method = record["method"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{meta_path} is damaged ({err}); re-export the model") from None
    clip = (
        clip_lib.build(clip_lib.CLIPConfig.from_dict(record["clip"]))
        if record.get("clip")
        else None
    )
    model = create_model(method, config=record.get("config"), clip=clip)
    weights = folder / MODEL_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no {MODEL_WEIGHTS}; the model folder is incomplete")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit model {method!r}: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    return model.to(device).eval()
