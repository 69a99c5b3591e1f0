"""Resuming a training run: the checkpoint ``--resume`` names, what changed in the config since it
was written, and the record of changes a user accepted.

A resumed run must train what the checkpoint's run trained, so a changed config is refused with
the differing keys listed unless the user allows it (``--allow-config-change``); the accepted
changes are appended to ``config_changes.jsonl`` in the run folder, and ``train_config.json``
keeps the config the run started with. These keys may change freely, as they change where the
run lives or how it is watched, not what it learns:

- ``run.output`` and ``data.root`` (folders move; a moved dataset is checked by its record of
  files and classes instead), ``run.device``, ``data.num_workers`` (samples do not depend on
  worker processes);
- ``eval.*`` (evaluation leaves the training RNG untouched), ``checkpoint.*``, ``logging.*``;
- ``optim.skip_nonfinite`` (how many NaN/inf steps may be skipped: the way out of a stop).
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
from pathlib import Path
from typing import Any

from vocaseg.config import to_dict
from vocaseg.engine.checkpoint import list_checkpoints, load_checkpoint
from vocaseg.engine.train_config import TrainConfig, parse_train_config
from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.io import atomic_open
from vocaseg.models.registry import build_config

FREE_ON_RESUME = (
    "run.output",
    "run.device",
    "data.root",
    "data.num_workers",
    "optim.skip_nonfinite",
    "eval.*",
    "checkpoint.*",
    "logging.*",
)
CONFIG_CHANGES = "config_changes.jsonl"
_UNSET = "<unset>"


def resume_checkpoint(folder: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``None`` for a fresh run (refused when ``folder`` already
    holds checkpoints), the newest one for ``"auto"`` (``None`` when there is none) or a path."""
    found = list_checkpoints(folder)
    if resume is None:
        if found:
            raise ConfigError(
                f"{folder.parent} already holds checkpoints; pass --resume auto to continue "
                "that run or choose another --output"
            )
        return None
    if resume == "auto":
        return found[-1] if found else None
    return Path(resume)


def read_resume_checkpoint(path: Path, resume: str, method: str) -> dict[str, Any]:
    """The checkpoint to resume from; for ``--resume auto``, a damaged newest checkpoint names
    the one before it (never skipped silently: the user decides)."""
    try:
        return load_checkpoint(path, method)
    except CheckpointError as err:
        older = [p for p in list_checkpoints(path.parent) if p != path]
        if resume != "auto" or not older:
            raise
        raise CheckpointError(
            f"{err}; the newest checkpoint is damaged: resume from the one before with "
            f"--resume {older[-1]} (or delete {path.name})"
        ) from None


def check_config(
    stored: dict[str, Any], cfg: TrainConfig, checkpoint: Path, allow: bool
) -> dict[str, tuple[Any, Any]]:
    """Every change from the checkpoint's config ``stored`` to ``cfg``; raises a
    :class:`ConfigError` listing those outside :data:`FREE_ON_RESUME` unless ``allow``."""
    # through today's dataclasses, so keys added since the checkpoint get their defaults
    with contextlib.suppress(ConfigError):
        stored = full_config(parse_train_config(stored, where=str(checkpoint)))
    changes = config_changes(stored, full_config(cfg))
    refused = blocking(changes)
    if refused and not allow:
        raise ConfigError(
            f"{checkpoint} was written with another config ({describe(refused)}); resume with "
            "the config it was trained with, or pass --allow-config-change to continue with the "
            f"new values (recorded in the run folder's {CONFIG_CHANGES})"
        )
    return changes


def check_dataset(
    stored: dict[str, Any], record: dict[str, Any], checkpoint: Path, allow: bool
) -> dict[str, tuple[Any, Any]]:
    """A moved dataset (``data.root``) must hold the files and classes of the checkpoint's
    dataset ``record``: the differences as ``{"dataset.<key>": (old, new)}``, refused unless
    ``allow``. Nothing to compare when the checkpoint has no record."""
    keys = sorted((set(stored) | set(record)) - {"root"})
    changed = {
        f"dataset.{key}": (stored.get(key), record.get(key))
        for key in keys
        if stored and stored.get(key) != record.get(key)
    }
    if changed and not allow:
        raise ConfigError(
            f"the training data differs from the data {checkpoint} was trained on "
            f"({describe(changed)}); point data.root at the same data, or pass "
            "--allow-config-change"
        )
    return changed


def full_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as a dict, its ``model`` section with every default of the method filled in."""
    record = to_dict(cfg)
    record["model"] = {"name": cfg.method, **to_dict(build_config(cfg.method, cfg.model_options))}
    return record


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"optim.lr": 0.001, ...}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every key whose value differs between two config dicts: ``{key: (old, new)}``."""
    before, after = flatten(old), flatten(new)
    keys = sorted(set(before) | set(after))
    return {
        key: (before.get(key, _UNSET), after.get(key, _UNSET))
        for key in keys
        if before.get(key, _UNSET) != after.get(key, _UNSET)
    }


def blocking(changes: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """The changes that need ``--allow-config-change`` (not in :data:`FREE_ON_RESUME`)."""
    return {
        key: values
        for key, values in changes.items()
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in FREE_ON_RESUME)
    }


def describe(changes: dict[str, tuple[Any, Any]], limit: int = 8) -> str:
    """``optim.lr 0.001 -> 0.5, schedule.iterations 300 -> 320 (+2 more)``."""
    items = [f"{key} {_show(old)} -> {_show(new)}" for key, (old, new) in changes.items()]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def record_changes(
    folder: Path, step: int, checkpoint: Path, changes: dict[str, tuple[Any, Any]]
) -> None:
    """Append one JSON line (time, step, checkpoint, ``{key: [old, new]}``) to the change log."""
    path = folder / CONFIG_CHANGES
    lines = path.read_text(encoding="utf-8") if path.is_file() else ""
    entry = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "step": step,
        "checkpoint": str(checkpoint),
        "changes": {key: list(values) for key, values in changes.items()},
    }
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(lines + json.dumps(entry, ensure_ascii=False) + "\n")


def _show(value: Any) -> str:
    text = value if value == _UNSET else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
