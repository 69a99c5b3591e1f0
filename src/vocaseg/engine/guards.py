"""One-line errors of a training run: what a user can get wrong before or during training
(device, optimiser state, datasets named by config keys, errors inside DataLoader workers, failed
writes, a non-finite loss), each turned into a :class:`vocaseg.errors.UserError` that names the
problem and the fix. Failures of rank 0 alone (it writes the files) reach every process through
:func:`raise_any`, so all processes stop together.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from typing import Any

import torch

from vocaseg.errors import ConfigError, DatasetError, UserError


class NonFiniteLoss(UserError, FloatingPointError):
    """The loss became NaN/inf more often than ``optim.skip_nonfinite`` allows."""


def check_device(device: str) -> None:
    """``run.device`` names a device this machine has: one line, before anything is built."""
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"run.device={device}, but CUDA is not available on this machine; use "
            "--set run.device=cpu (or auto)"
        )
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise ConfigError(
            f"run.device={device} does not exist: this machine has {torch.cuda.device_count()} "
            "GPU(s) (cuda:0 ...)"
        )


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Moments of the shape of their parameter (``load_state_dict`` checks only the counts)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(
                        f"{name} of shape {tuple(value.shape)} for a parameter of shape "
                        f"{tuple(param.shape)}"
                    )


def write_error(write: Callable[[], Any], what: str, then: str = "") -> str | None:
    """Run ``write``; the one-line message of a failure (full disk, read-only folder) or None."""
    try:
        write()
    except UserError as err:
        return str(err)
    except OSError as err:
        reason = "disk full" if err.errno == errno.ENOSPC else err.strerror or type(err).__name__
        return f"cannot write {what} ({reason}){'; ' + then if then else ''}"
    return None


def raise_any(errors: list[str | None]) -> None:
    """Raise the first process's error on every process (all stop together)."""
    failed = next((error for error in errors if error), None)
    if failed:
        raise UserError(failed)


@contextlib.contextmanager
def config_hints(key: str) -> Iterator[None]:
    """Dataset errors that name the command-line flag name the config key ``key`` instead."""
    try:
        yield
    except DatasetError as err:
        text = str(err)
        for flag in ("--data-root (root=)", "root= (--data-root)"):
            text = text.replace(flag, key)
        if text == str(err):
            raise
        raise DatasetError(text) from None


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A user error raised in a DataLoader worker as its own one line, not the worker's
    traceback that the DataLoader wraps it in."""
    try:
        yield
    except UserError as err:
        text = str(err)
        if "Traceback" not in text:
            raise
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        message = lines[-1].removeprefix(prefix) if lines else text.strip().splitlines()[-1]
        raise type(err)(message) from None
