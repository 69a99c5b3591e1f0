"""Reading torch pickle files without running their code: ``torch.load(weights_only=True)`` with
one-line errors, the one place every weights reader (CLIP files, method weights, foreign
checkpoints for ``vocaseg convert``) opens such a file.

torch's refusal of a file that holds Python objects is several lines with terminal colour codes
and advice to pass ``weights_only=False``; :func:`load_untrusted` reduces it to the object the file
would have had to unpickle and the caller's fix. torch's notice about a file's pickle protocol is
not shown: nothing in it is for the user (the refusal that may follow says what to do).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from vocaseg.errors import CheckpointError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def torch_load(path: str | Path, allow_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU, weights-only unless ``allow_pickle``, without the protocol notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)


def load_untrusted(path: str | Path, pickle_fix: str, allow_pickle: bool = False) -> Any:
    """:func:`torch_load`, any failure raised as one :class:`CheckpointError` line.

    ``pickle_fix`` ends the message when the file holds Python objects a weights-only load refuses
    (e.g. "if you trust the file, retry with --allow-pickle"); a damaged file gets its own fix.
    """
    try:
        return torch_load(path, allow_pickle)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(refusal(path, err, pickle_fix, allow_pickle)) from None


def refusal(path: str | Path, err: BaseException, pickle_fix: str, allow_pickle: bool) -> str:
    """One line for a file ``torch.load`` refused with ``err`` (see :func:`load_untrusted`)."""
    text = _ANSI.sub("", str(err))
    found = _GLOBAL.search(text)
    if found is not None and not allow_pickle:
        return (
            f"cannot read {path} without unpickling code: it holds the Python object "
            f"{found.group(1)}, which a weights-only load refuses; {pickle_fix}"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "weights only" in text.lower() and not allow_pickle:
        # torch names what it refused on the line after "WeightsUnpickler error:"
        marker = next((i for i, line in enumerate(lines) if "Unpickler error" in line), None)
        detail = lines[marker + 1] if marker is not None and marker + 1 < len(lines) else "refused"
        return f"cannot read {path} without unpickling code ({detail[:200]}); {pickle_fix}"
    first = lines[0].split(". ")[0].rstrip(".")[:200] if lines else type(err).__name__
    return (
        f"cannot read {path} as a checkpoint ({first}); it is truncated or damaged: copy it again"
    )
