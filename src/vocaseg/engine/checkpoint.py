"""Training checkpoints: atomic, self-describing, loadable with ``torch.load(weights_only=True)``.

A checkpoint is one ``.pt`` file holding only tensors and plain containers:

- ``format`` / ``method`` / ``config`` (the full training config) / ``model_config`` / ``clip``
  (where the frozen CLIP came from) / ``vocabulary`` (class names, seen ids) / ``split`` /
  ``vocaseg_version`` / ``git_commit``;
- ``step``, ``epoch``, ``batch_in_epoch`` (the data position), ``model`` (the model's own
  weights, without the frozen CLIP unless it was random), ``optimizer``,
  ``scaler`` (fp16 GradScaler or ``None``) and ``rng`` (python / numpy / torch / CUDA states of
  every process, in rank order).

Files are written to a temporary name and renamed, so a crash or a full disk mid-write leaves the
previous checkpoint intact (a failed write is one :class:`vocaseg.errors.UserError` line naming
the reason, e.g. "disk full", and the path); :func:`prune_checkpoints` keeps the newest N (and any
listed steps).
"""

from __future__ import annotations

import errno
import random
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocaseg.errors import UserError
from vocaseg.io import atomic_path, check_writable_folder
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
    """``torch.save`` ``state`` (plus the format tag) atomically to ``path``; a failed write
    (full disk, read-only or vanished folder) is one :class:`UserError` line."""
    path = Path(path)
    handle = None
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as raw:
            handle = _ErrorRecorder(raw)
            torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)
            handle.flush()
    except (OSError, RuntimeError) as err:
        # torch's zip writer reports a failed write as a RuntimeError without the reason; the
        # recorder kept the OSError it hid.
        cause = handle.error if handle is not None and handle.error is not None else err
        raise UserError(write_failure(path, cause)) from None
    return path


def write_failure(path: Path, err: BaseException) -> str:
    """``cannot save checkpoint PATH: disk full (...)`` plus where the newest intact one is."""
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or _no_space(path.parent):
        reason = "disk full (no space left on the device); free some space"
    elif isinstance(err, OSError):
        reason = f"{err.strerror or type(err).__name__}; check the folder"
    else:
        reason = f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
    older = [p for p in list_checkpoints(path.parent) if p != path]
    kept = f"the newest intact checkpoint is {older[-1]}" if older else "no earlier checkpoint"
    return f"cannot save checkpoint {path}: {reason}; {kept}; continue with --resume auto"


def _no_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


class _ErrorRecorder:
    """A file wrapper that remembers the first ``OSError`` of a write or flush."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self.handle.flush()
        except OSError as err:
            self.error = self.error or err
            raise


def check_run_folder(folder: Path) -> None:
    """Fail before any work when files cannot be written into the run folder ``folder``."""
    check_writable_folder(
        folder, "--output", "the run folder", "pick another with --output (or run.output)"
    )


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
