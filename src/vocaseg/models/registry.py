"""Method registry: ``register_model``, ``list_models``, ``get_entry`` and ``create_model``.

A registry entry names everything the rest of vocaseg needs to know about a method without
importing it: its config class and preset values, the CLIP towers it uses and when, whether it must
be trained before it segments anything, the training-data pipeline it reads, and a tiny
configuration for the contract tests. Model folders (``save_model``/``load_model``) are in
:mod:`vocaseg.models.folder`; the resolver the commands share is :mod:`vocaseg.models.resolve`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocaseg.config import from_dict, load_yaml, to_dict
from vocaseg.errors import ConfigError, UserError
from vocaseg.models.base import SegmentationModel
from vocaseg.models.towers import Towers, TowerUse, build_towers

# Modules that register the built-in methods when imported.
_METHOD_MODULES = [
    "vocaseg.models.maskclip",
    "vocaseg.models.tagclip",
    "vocaseg.models.gkc",
    "vocaseg.models.zeroseg",
]

Builder = Callable[[Any, "Towers | None"], SegmentationModel]
TowerSpec = dict[str, TowerUse] | Callable[[Any], dict[str, TowerUse]]


@dataclass(frozen=True)
class ModelEntry:
    """One registered method (or preset of one).

    ``towers``: the CLIP towers the method uses and when (``{"text": "inference", "visual":
    "training"}``), or a function of the config returning that; ``trained``: the method needs
    trained weights (a model folder) before it can segment; ``pipeline``: the training-data
    pipeline it reads (``vocaseg.data.pipelines``); ``tiny``: config values of a tiny random
    instance for the contract tests; ``preset``: config values this name sets.
    """

    name: str
    config_class: type
    builder: Builder
    description: str
    preset: dict[str, Any] = field(default_factory=dict)
    towers: TowerSpec = field(default_factory=dict)
    trained: bool = False
    pipeline: str = "semantic"
    tiny: dict[str, Any] = field(default_factory=dict)
    tiny_train: dict[str, dict[str, Any]] = field(default_factory=dict)
    exportable: bool = True

    def tower_uses(self, config: Any) -> dict[str, TowerUse]:
        uses = self.towers(config) if callable(self.towers) else self.towers
        return dict(uses) if getattr(config, "clip", None) is not None else {}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    config_class: type,
    description: str,
    *,
    towers: TowerSpec | None = None,
    trained: bool = False,
    pipeline: str = "semantic",
    tiny: dict[str, Any] | None = None,
    tiny_train: dict[str, dict[str, Any]] | None = None,
    exportable: bool = True,
    **preset: Any,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config, towers) -> SegmentationModel`` under ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            warnings.warn(
                f"model {name!r} is registered again; the new entry replaces it", stacklevel=2
            )
        _REGISTRY[name] = ModelEntry(
            name,
            config_class,
            builder,
            description,
            dict(preset),
            towers or {},
            trained,
            pipeline,
            dict(tiny or {}),
            dict(tiny_train or {}),
            exportable,
        )
        return builder

    return decorate


def _load_registry() -> dict[str, ModelEntry]:
    for module in _METHOD_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_load_registry())


def builtin_models() -> list[str]:
    """The methods vocaseg ships (without plugins and test-only models)."""
    registry = _load_registry()
    return sorted(n for n, e in registry.items() if e.builder.__module__ in _METHOD_MODULES)


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
    *,
    pretrained: bool | str | os.PathLike = False,
    clip: Any = None,
    training: bool = False,
    **overrides: Any,
) -> SegmentationModel:
    """Build method ``name`` (eval mode).

    ``config``: a YAML file (its ``model:`` section), a dict or a config dataclass; keyword
    ``overrides`` set single fields. The CLIP it stands on: ``pretrained=False`` random weights in
    the config's architecture (recorded as ``"random"``; no download), ``True`` the config's named
    weights (e.g. ``"ViT-B/16"``, downloaded on first use), or a known name / checkpoint file;
    ``clip`` passes a built CLIP (or :class:`~vocaseg.models.towers.Towers`) instead.
    ``training=True`` also builds the towers the method uses only in training (teachers).
    A trained method's heads are random here: load trained weights with ``load_model``.
    """
    entry = get_entry(name)
    cfg = build_config(name, config, **overrides)
    towers = clip if isinstance(clip, Towers) else None
    if towers is None:
        towers = build_towers(
            entry.tower_uses(cfg),
            getattr(cfg, "clip", None),
            pretrained=pretrained,
            clip=clip,
            training=training,
        )
    model = entry.builder(cfg, towers)
    model.name = name
    model.clip_source = towers.source.record() if towers is not None else None
    model.freeze_declared()
    return model.eval()
