"""Training checkpoints: atomic, self-describing, loadable with ``torch.load(weights_only=True)``.

A checkpoint is one ``.pt`` file holding only tensors and plain containers:

- ``format`` / ``method`` / ``config`` (the full training config) / ``model_config`` / ``clip``
  (where the frozen CLIP came from) / ``vocabulary`` (class names, seen ids) / ``split`` /
  ``vocaseg_version`` / ``git_commit``;
- ``step``, ``epoch``, ``batch_in_epoch`` (the data position), ``model`` (the model's own
  weights, without the frozen CLIP unless it was random), ``optimizer``,
  ``scaler`` (fp16 GradScaler or ``None``) and ``rng`` (python / numpy / torch / CUDA states of
  every process, in rank order).

Files are written to a temporary name and renamed, so a crash mid-write leaves the previous
checkpoint intact; :func:`prune_checkpoints` keeps the newest N (and any listed steps).
"""

from __future__ import annotations

import random
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocaseg.io import atomic_path
from vocaseg.models.weights import CHECKPOINT_FORMAT, read_training_checkpoint

_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (temporary files of interrupted writes skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` (plus the format tag) atomically to ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return Path(path)


def prune_checkpoints(folder: str | Path, keep_last: int, keep: Iterable[int] = ()) -> None:
    """Delete all but the newest ``keep_last`` checkpoints in ``folder`` and those of the steps
    in ``keep`` (e.g. the half-schedule checkpoint a transductive run starts from)."""
    keep = {checkpoint_path(folder, step).name for step in keep}
    for path in list_checkpoints(folder)[:-keep_last]:
        if path.name not in keep:
            path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """Read a training checkpoint; with ``method``, refuse one written for another method."""
    return read_training_checkpoint(path, method)


def git_commit() -> str | None:
    """The commit of the source tree vocaseg runs from, if it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as weights-only-loadable values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
