"""Shared pieces of the dataset converters: source folders or archives, reports, count checks.

A converter reads an official release (a folder, or a ``.zip`` / ``.tar[.gz]`` archive that is
extracted once under ``DST/.extracted/``) and writes files a reader layout accepts, each one
atomically. It returns a :class:`Report`: what was written, the counts against the benchmark's
known numbers and what is missing.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from vocaseg.errors import DatasetError
from vocaseg.io import atomic_open

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


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


def source_dir(src: str | Path, dst: Path) -> Path:
    """``src`` itself when a folder, else the archive extracted (once) under ``dst/.extracted``."""
    src = Path(src).expanduser()
    if src.is_dir():
        return src
    if not src.is_file():
        raise DatasetError(f"source {src} not found; pass the downloaded archive or its folder")
    name = src.name
    if not name.endswith(ARCHIVE_SUFFIXES):
        raise DatasetError(f"{src} is neither a folder nor a .zip/.tar/.tar.gz archive")
    target = dst / ".extracted" / name.split(".")[0]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(src) as archive:
                archive.extractall(tmp)
        else:
            with tarfile.open(src) as archive:
                archive.extractall(tmp, filter="data")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


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
