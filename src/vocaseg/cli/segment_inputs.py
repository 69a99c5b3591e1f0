"""Which inputs ``vocaseg segment`` runs on, and under which output names.

Files and folders expand to images and videos (:func:`vocaseg.inference.images.find_inputs`;
``--video`` makes a folder one video of frames); a file named twice (however spelled) runs once;
label maps and overlays an earlier run wrote into ``-o`` are not inputs. Output names are the
inputs' stems (with ``--recursive``, below their sub-folder); when two different inputs would get
one name (letter case ignored, as on macOS and Windows), the first in input order keeps it and
the next get ``_2``, ``_3``, ... (never another input's own name).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from vocaseg.errors import UserError


@dataclass(frozen=True)
class Job:
    """One input: its file (or frame folder), its output name below ``-o``, and its kind."""

    path: Path
    name: Path
    video: bool


def plan_jobs(args: argparse.Namespace, out_dir: Path) -> list[Job]:
    """The inputs to segment, in order, each file once, each with its own output name."""
    from vocaseg.inference.images import find_inputs
    from vocaseg.inference.video_io import VIDEO_SUFFIXES, is_video_path

    found: list[tuple[Path, Path, bool]] = []  # (file, output name before deduplication, video)
    own_outputs = 0
    for item in args.inputs:
        _check_local(item)
        path = Path(item)
        if args.video and path.is_dir():
            found.append((path, Path(path.resolve().name), True))
            continue
        for file, relative in find_inputs(
            [path], recursive=args.recursive, video_suffixes=VIDEO_SUFFIXES, exclude=out_dir
        ):
            if path.is_dir() and _is_own_output(file, out_dir):  # named files are kept
                own_outputs += 1
                continue
            found.append((file, relative.parent / relative.stem, is_video_path(file)))
    if own_outputs:
        note(f"{count(own_outputs, 'file')} in -o written by an earlier run left out")
    unique = _once_each(found)
    names = output_names([name for _, name, _ in unique])
    return [Job(file, name, video) for (file, _, video), name in zip(unique, names)]


def _is_own_output(file: Path, out_dir: Path) -> bool:
    """A label map or overlay that ``vocaseg segment`` wrote into ``out_dir``."""
    written = file.name.endswith(("_label.png", "_overlay.png", "_overlay.mp4"))
    return written and file.resolve().parent.is_relative_to(out_dir.resolve())


def _once_each(found: list[tuple[Path, Path, bool]]) -> list[tuple[Path, Path, bool]]:
    """``found`` without repeats of one file (however named); a note names the repeats."""
    seen: set[Path] = set()
    repeats: Counter[str] = Counter()
    unique = []
    for entry in found:
        key = entry[0].resolve()
        if key in seen:
            repeats[str(entry[0])] += 1
            continue
        seen.add(key)
        unique.append(entry)
    if repeats:
        named = ", ".join(f"{name} ({count + 1} times)" for name, count in repeats.items())
        note(f"named more than once, segmented and written once: {named}")
    return unique


def _check_local(item: str) -> None:
    """Standard input and URLs are refused by name (a path would mangle a URL's slashes)."""
    if item == "-":
        raise UserError(
            "reading an image from standard input (-) is not supported; save it to a file and "
            "pass its path"
        )
    if "://" in item:
        raise UserError(f"{item} is a URL; download it first and pass the file's path")


def output_names(natural: list[Path]) -> list[Path]:
    """Unique output names (relative folder / stem) for inputs whose own names are ``natural``.

    The first input with a given name keeps it; later ones get ``_2``, ``_3``, ... (skipping any
    name another input has as its own). Names compare without letter case, as on macOS and Windows.
    """

    def key(name: Path) -> str:
        return name.as_posix().casefold()

    reserved = {key(name) for name in natural}
    taken: set[str] = set()
    names = []
    for name in natural:
        chosen, n = name, 1
        while key(chosen) in taken or (chosen != name and key(chosen) in reserved):
            n += 1
            chosen = name.with_name(f"{name.name}_{n}")
        taken.add(key(chosen))
        names.append(chosen)
    return names


def note(text: str) -> None:
    """A ``note:`` line on stderr that leaves progress bars intact."""
    tqdm.write(f"note: {text}", file=sys.stderr)


def count(n: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun}{'s' * (n != 1)}"
