"""Shared pieces of the dataset converters: destination checks, archives, reports, write errors.

A converter reads an official release (a folder, or a ``.zip`` / ``.tar`` / ``.tar.gz`` / ``.tgz``
archive that :func:`extract` unpacks under ``DST/.extracted/`` for the length of the run) and writes files a reader layout accepts, each one atomically. It returns a
:class:`Report`: what was written, the counts against the benchmark's known numbers and what is
missing. Every failure a user can cause (unwritable or full destination, damaged archive) is a
one-line :class:`~vocaseg.errors.DatasetError`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import lzma
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from vocaseg.errors import DatasetError
from vocaseg.io import atomic_open, check_writable_folder

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
EXTRACTED = ".extracted"  # folder under DST holding archives unpacked during a run
_DAMAGED = (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile,
            lzma.LZMAError)  # fmt: skip
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


@dataclass
class Report:
    """Outcome of one conversion; ``ok`` is False when a count differs or files are missing."""

    dataset: str
    dst: Path
    counts: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        counts_match = all(self.counts.get(k) == v for k, v in self.expected.items())
        return counts_match and not self.missing

    def lines(self) -> list[str]:
        out = [f"{self.dataset}: wrote under {self.dst}"]
        for key, count in self.counts.items():
            want = self.expected.get(key)
            check = (
                ""
                if want is None
                else (" (as expected)" if want == count else f" (expected {want})")
            )
            out.append(f"  {key}: {count}{check}")
        if self.missing:
            out.append(f"  missing: {len(self.missing)}, e.g. {', '.join(self.missing[:3])}")
        out.extend(f"  note: {note}" for note in self.notes)
        return out


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def write_error(err: OSError, where: Path) -> DatasetError | None:
    """The one-line error for a failed write (disk full, no permission), else None."""
    target = err.filename or where
    if err.errno in _FULL:
        return DatasetError(
            f"disk full while writing {target} ({err.strerror}); free space on that disk or "
            "pass a --dst on another one, then run again (files already written are complete)"
        )
    if err.errno in _DENIED:
        return DatasetError(
            f"cannot write {target} ({err.strerror}); pass a --dst you can write to"
        )
    return None


def check_writable(dst: Path) -> None:
    """Create ``dst`` and write a probe file there, or say in one line why it cannot be used."""
    check_writable_folder(dst, "--dst", "--dst", "pass a folder you can write to", DatasetError)


def _unpack(src: Path, into: Path) -> None:
    if src.name.lower().endswith(".zip"):
        with zipfile.ZipFile(src) as archive:
            archive.extractall(into)
    else:
        with tarfile.open(src) as archive:
            archive.extractall(into, filter="data")


def extract(src: Path, dst: Path) -> Path:
    """Unpack archive ``src`` into ``dst/.extracted/<name>`` (reused when already there)."""
    target = dst / EXTRACTED / src.name.split(".")[0]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        _unpack(src, partial)
        partial.rename(target)
    except tarfile.FilterError as err:
        raise DatasetError(
            f"{src} holds a member that would land outside its folder ({err}); "
            "use the official archive"
        ) from None
    except _DAMAGED as err:
        reason = str(err).splitlines()[0].rstrip(":") or type(err).__name__
        state = "empty" if src.stat().st_size == 0 else "truncated or damaged"
        raise DatasetError(f"{src} is {state} ({reason}); download it again") from None
    except OSError as err:
        raise (write_error(err, target) or err) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if not any(target.parent.iterdir()):
            target.parent.rmdir()
    return target


def remove_extracted(target: Path) -> bool:
    """Delete an extracted copy (and ``.extracted`` when empty); False if it could not be."""
    shutil.rmtree(target, ignore_errors=True)
    if target.exists():
        return False
    with contextlib.suppress(OSError):
        target.parent.rmdir()  # only when nothing else is in it
    return True


def find_folder(root: Path, name: str, what: str) -> Path:
    """``root/name`` or the shallowest folder called ``name`` below it (archives nest)."""
    if (root / name).is_dir():
        return root / name
    found = sorted((p for p in root.rglob(name) if p.is_dir()), key=lambda p: len(p.parts))
    if not found:
        raise DatasetError(f"no {name!r} folder under {root}; {what}")
    return found[0]


def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)
