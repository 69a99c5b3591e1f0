"""Devices and precisions as users name them (``--device cuda:1``, ``--dtype bfloat16``).

A device that does not exist, or CUDA on a machine without it, is one clear error line instead of
a torch traceback; :func:`autocast` is the no-op or autocast context a precision needs.
"""

from __future__ import annotations

import contextlib

import torch

from vocaseg.errors import ConfigError, UserError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/... -> torch dtype (None -> float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    return _DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> torch device, checked to exist."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {device} requested but CUDA is not available; use --device cpu"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise UserError(
                f"device {device} does not exist: this machine has "
                f"{torch.cuda.device_count()} GPU(s) (cuda:0 ...)"
            )
    elif resolved.type != "cpu":
        raise UserError(f"device {device} is not supported; use cpu, cuda or cuda:N")
    return resolved


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (nothing for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
