"""The one door for method weights: read a model folder, a training checkpoint or a foreign file
(:func:`read_state`), then load it into a model with a report of what fit (:func:`load_into`).

Everything that puts weights into a method goes through here: ``load_model``, ``run.init``, resume,
``vocaseg convert`` and the importers (:func:`read_foreign_checkpoint` reads another code base's
checkpoint for both converters). Loading never executes pickled code (``weights_only=True``
and safetensors); only ``vocaseg convert --allow-pickle`` unpickles, for files the user trusts. Missing, unexpected and mis-shaped keys are listed in one line; a partial load
names what it may leave out (``allow_missing``: ``fnmatch`` patterns such as ``"decoder_*"``).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vocaseg.clip.safe_load import load_untrusted, torch_load
from vocaseg.errors import CheckpointError

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
CHECKPOINT_FORMAT = "vocaseg-train-checkpoint/1"


@dataclass
class LoadReport:
    """What :func:`load_into` did: keys loaded, left at their initial values, and ignored."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"left at init: {_listing(self.missing)}")
        if self.ignored:
            parts.append(f"ignored: {_listing(self.ignored)}")
        return "; ".join(parts)


def _listing(items: Sequence[str], limit: int = 8) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def read_model_record(folder: str | Path) -> dict[str, Any]:
    """``model.json`` of a model folder; a clear error for anything else."""
    folder = Path(folder)
    meta = folder / MODEL_JSON
    if not meta.is_file():
        raise CheckpointError(
            f"{folder} is not a vocaseg model folder (no {MODEL_JSON}); pass a folder written "
            "by 'vocaseg train' or 'vocaseg convert'"
        )
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        record["method"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{meta} is damaged ({err}); re-export the model") from None
    return record


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the model folder is incomplete")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def read_training_checkpoint(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """A ``vocaseg train`` checkpoint; with ``method``, refuse one written for another method."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file (ckpt_*.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (check --resume / run.init)")
    try:
        state = torch_load(path)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise CheckpointError(
            f"{path} is not a readable vocaseg training checkpoint ({type(err).__name__}); "
            "pass a ckpt_*.pt file written by 'vocaseg train'"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a vocaseg training checkpoint (format tag missing); "
            "pass a ckpt_*.pt file written by 'vocaseg train'"
        )
    if method is not None and state.get("method") != method:
        raise CheckpointError(
            f"{path} was trained with method {state.get('method')!r}, but this run builds "
            f"{method!r}; use the matching config or another output folder"
        )
    return state


def read_state(source: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state dict, record)`` from a model folder, a training checkpoint or a foreign file.

    The record holds what is known of the source: ``kind`` (``model_folder``, ``checkpoint``,
    ``file``), ``method`` and, for checkpoints and trained model folders, the training ``split``.
    A foreign file may wrap its state dict in ``state_dict``/``model`` and prefix ``module.``.
    """
    source = Path(source)
    if source.is_dir():
        record = read_model_record(source)
        state = read_safetensors(source / MODEL_WEIGHTS)
        training = record.get("training") or {}
        return state, {
            "kind": "model_folder",
            "method": record["method"],
            "split": training.get("split"),
        }
    if not source.is_file():
        raise CheckpointError(f"weights not found: {source} (check the path)")
    if source.suffix == ".safetensors":
        return read_safetensors(source), {"kind": "file", "method": None}
    fix = "pass a vocaseg checkpoint, a model folder or a plain state dict (.pt/.safetensors)"
    obj = load_untrusted(source, fix)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj["model"], {
            "kind": "checkpoint",
            "method": obj.get("method"),
            "split": obj.get("split"),
        }
    return _unwrap(obj, source), {"kind": "file", "method": None}


def read_foreign_checkpoint(
    path: str | Path, allow_pickle: bool = False
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors of another code base's checkpoint, and the dict around them.

    The state dict may be wrapped (mmcv's ``{"meta", "state_dict", "optimizer"}``, detectron2's
    ``{"model", "iteration"}``) or bare; ``module.`` prefixes (DataParallel) are dropped, and so are
    entries that are not tensors. Read weights-only unless ``allow_pickle`` (trusted files only;
    the refusal says so in one line). Returns ``(state, wrapper)``; ``wrapper`` is ``{}`` for a
    bare state dict. The converters check the keys they expect.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the released checkpoint file (.pth)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (check the path)")
    raw = load_untrusted(path, "if you trust the file, retry with --allow-pickle", allow_pickle)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    state = _unwrapped(raw)
    wrapper = raw if state is not raw else {}
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    return tensors, wrapper


def _unwrapped(obj: Any) -> Any:
    """The state dict inside ``state_dict`` / ``model`` wrappers (``obj`` itself when bare)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return obj


def _unwrap(obj: Any, source: Path) -> dict[str, Tensor]:
    obj = _unwrapped(obj)
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(
    model: nn.Module,
    state: dict[str, Tensor],
    *,
    what: str,
    required: Sequence[str] | None = None,
    allow_missing: Sequence[str] = (),
    ignore: Sequence[str] = (),
    rename: Callable[[str], str] | None = None,
) -> LoadReport:
    """Copy ``state`` into ``model``; raise one ``CheckpointError`` line on any misfit.

    ``required``: the keys the state must hold (default: every key of ``model.state_dict()``);
    ``allow_missing``: patterns of required keys that may stay at their initial values;
    ``ignore``: patterns of state keys to skip; ``rename`` maps state keys to model keys first.
    A tensor of another shape is always an error. Keys of the model that are not required
    (e.g. frozen CLIP weights rebuilt from a reference) are loaded when present.
    """
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    own = model.state_dict()
    required = list(own) if required is None else list(required)
    ignored = [k for k in state if _matches(k, ignore)]
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in required if k not in state]
    not_allowed = [k for k in missing if not _matches(k, allow_missing)]
    problems = [
        f"{label} ({len(items)}): {_listing(items)}"
        for label, items in (
            ("missing", not_allowed),
            ("unexpected", unexpected),
            ("wrong shape", shapes),
        )
        if items
    ]
    if problems:
        raise CheckpointError(f"{what} does not fit this model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)
    return LoadReport(loaded=sorted(state), missing=missing, ignored=ignored)


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)
