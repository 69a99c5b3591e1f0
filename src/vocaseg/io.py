"""Atomic file writes: write to a temporary name in the same folder, then rename over the target.

A crash or a full disk midway leaves the previous file (if any) intact and never a half-written one.
:func:`check_writable_folder` finds an unusable output folder before any work is done.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vocaseg.errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    For writers that need a file name (``torch.save``, ``PIL.Image.save``, ``np.savez``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:  # on disk before the rename: a crash leaves no empty file
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` when closed cleanly."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False, allow_nan=True)
        handle.write("\n")


def check_writable_folder(
    folder: Path, flag: str, what: str, fix: str, error: type[UserError] = UserError
) -> None:
    """Create ``folder`` (given by option ``flag``) and write a probe file there, or raise
    ``error`` in one line: ``cannot write to <what> <folder> (<reason>); <fix>`` (a full disk
    says "disk full"), or ``<flag> <folder> is a file, not a folder``. Fail early, before minutes
    of work."""
    if folder.exists() and not folder.is_dir():
        raise error(f"{flag} {folder} is a file, not a folder; pick a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = "disk full" if err.errno == errno.ENOSPC else err.strerror or type(err).__name__
        raise error(f"cannot write to {what} {folder} ({reason}); {fix}") from None
