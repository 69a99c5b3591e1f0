"""Class-name lists, zero-shot splits and id tables shipped as package data
(docs/datasets.md §3, §4.1).

Files live in ``vocaseg/data/classes``: ``<id>.txt`` is a benchmark's canonical list (one class
per line in trainId order, ``;`` between synonyms); other suffixes are variants reproducing a
codebase (``pc459.labels``, ``voc20.san``, ``voc21.groupvit``, ``voc21.sclip``, ``voc20b.catseg``),
``<id>.unseen`` the unseen trainIds of a ``zs-split`` split and ``<id>.ids`` integer id tables
used by the readers and converters. A list id is the file name (``"pc459.labels"``); a bare id
means ``<id>.txt``.

File rules: UTF-8 text, a leading byte-order mark (as Windows Notepad writes) is ignored; each line
is trimmed; blank lines and lines whose first non-blank character is ``#`` are skipped (a ``#``
later in a line is part of the name); every other line is one entry.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from vocaseg.errors import DatasetError
from vocaseg.hashing import text_sha256
from vocaseg.text.vocab import Vocabulary


def _folder():
    return resources.files("vocaseg.data") / "classes"


def _file_name(list_id: str) -> str:
    return list_id if "." in list_id else f"{list_id}.txt"


@cache
def _read(list_id: str) -> str:
    path = _folder() / _file_name(list_id)
    if not path.is_file():
        raise DatasetError(
            f"no class list {list_id!r}; known lists: {', '.join(available_lists())}"
        )
    return path.read_text(encoding="utf-8-sig")  # drops a BOM


def _lines(list_id: str) -> list[str]:
    return [
        line.strip()
        for line in _read(list_id).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def available_lists() -> list[str]:
    """Every shipped file, as list ids (``voc21``, ``pc459.labels``, ``voc20.unseen``, ...)."""
    names = sorted(p.name for p in _folder().iterdir() if p.is_file())
    return [n.removesuffix(".txt") for n in names if not n.startswith(("_", "."))]


def load_class_list(list_id: str, seen: tuple[int, ...] | None = None) -> Vocabulary:
    """The vocabulary of list ``list_id`` (e.g. ``"ade150"``, ``"pc459.labels"``). Shipped lists
    may give one name to two classes (ADE-847's WordNet synonyms): see ``Vocabulary``."""
    return Vocabulary.from_names(_lines(list_id), seen=seen, allow_shared=True)


def load_ids(list_id: str) -> list[int]:
    """An integer table such as ``"pc60.ids"`` or a split such as ``"voc20.unseen"``."""
    return [int(line) for line in _lines(list_id)]


def class_list_sha256(list_id: str) -> str:
    """SHA-256 of the list file's bytes, recorded with every result."""
    return text_sha256(_read(list_id))


def seen_ids(dataset_id: str, num_classes: int) -> tuple[int, ...] | None:
    """Seen class ids of the dataset's ``zs-split`` split (all but ``<id>.unseen``), else None."""
    if f"{dataset_id}.unseen" not in available_lists():
        return None
    unseen = set(load_ids(f"{dataset_id}.unseen"))
    return tuple(i for i in range(num_classes) if i not in unseen)


def read_names(source: str | None) -> tuple[str, ...]:
    """Every name (synonyms flattened) of a text file or a shipped list id, one class per line;
    ``()`` for no source. Background synonyms and distractor lists are read this way."""
    if not source:
        return ()
    from pathlib import Path

    if Path(source).is_file():
        return tuple(Vocabulary.from_file(source).queries)
    return tuple(load_class_list(source).queries)
