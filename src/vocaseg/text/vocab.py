"""Class vocabularies: what the user names, parsed into classes with synonyms.

Syntax (command line and files alike): classes are separated by commas (or one per line in a
file), synonyms of one class by semicolons. ``"cat, sofa; couch, floor"`` is three classes; the
second has two names. The first name of a class is its display name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vocaseg.errors import VocabularyError


@dataclass(frozen=True)
class Vocabulary:
    """K classes, each with one or more names; optionally which classes are "seen" in training and
    which class is the background.

    ``background`` is the index of the class that background protocols (``vocaseg.background``)
    fill; when not given, a class whose first name is "background" is marked.
    ``background_scored``: whether the model scores the background's names like any class (a
    benchmark's "background" class) or only thresholding fills it (one added by
    :meth:`with_background`). ``allow_shared``: two classes may share a name (shipped benchmark
    lists such as ADE-847's WordNet synonyms): each class keeps its own query for it, so the
    classes tie on it and the argmax takes the first; a user's vocabulary refuses this.
    """

    classes: tuple[tuple[str, ...], ...]
    seen: tuple[int, ...] | None = None
    background: int | None = None
    background_scored: bool = True
    allow_shared: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.background is None:
            marked = [i for i, names in enumerate(self.classes) if names and _is_background(names)]
            object.__setattr__(self, "background", marked[0] if marked else None)
        elif not 0 <= self.background < len(self.classes):
            raise VocabularyError(
                f"background class {self.background} falls outside 0..{len(self.classes) - 1}"
            )
        if not self.classes:
            raise VocabularyError("the vocabulary is empty; name at least one class")
        seen_names: dict[str, int] = {}
        for index, names in enumerate(self.classes):
            if not names or any(not n.strip() for n in names):
                raise VocabularyError(
                    f"class {index + 1} has an empty name; remove stray separators"
                )
            for name in names:
                key = name.strip().lower()
                if key in seen_names and (not self.allow_shared or seen_names[key] == index):
                    raise VocabularyError(
                        f"the name {name!r} appears twice (classes {seen_names[key] + 1} and "
                        f"{index + 1}); give each class distinct names"
                    )
                seen_names[key] = index
        if self.seen is not None and any(not 0 <= i < len(self.classes) for i in self.seen):
            raise VocabularyError(
                f"seen class ids {self.seen} fall outside 0..{len(self.classes) - 1}"
            )

    def with_background(self, name: str = "background") -> Vocabulary:
        """This vocabulary with a class ``name`` appended and marked as the background; the model
        does not score it (only a background rule fills it)."""
        return Vocabulary(
            (*self.classes, (name,)),
            self.seen,
            background=len(self.classes),
            background_scored=False,
        )

    def rename(self, index: int, names: Sequence[str]) -> Vocabulary:
        """This vocabulary with class ``index`` named ``names`` (same indices, split and background)."""
        classes = list(self.classes)
        classes[index] = tuple(names)
        return Vocabulary(
            tuple(classes), self.seen, self.background, self.background_scored, self.allow_shared
        )

    def without(self, index: int) -> Vocabulary:
        """This vocabulary without class ``index`` (later classes move up by one; no split)."""
        kept = self.classes[:index] + self.classes[index + 1 :]
        background = self.background
        if background is not None:
            background = None if background == index else background - (background > index)
        return Vocabulary(kept, background=background, allow_shared=self.allow_shared)

    @classmethod
    def from_names(
        cls,
        names: Iterable[str | Sequence[str]],
        seen: Iterable[int] | None = None,
        allow_shared: bool = False,
    ) -> Vocabulary:
        """From a list whose items are a name, a ``"name; synonym"`` string or a list of names."""
        classes = []
        for item in names:
            parts = item.split(";") if isinstance(item, str) else list(item)
            classes.append(tuple(p.strip() for p in parts))
        seen = tuple(seen) if seen is not None else None
        return cls(tuple(classes), seen, allow_shared=allow_shared)

    @classmethod
    def parse(cls, text: str) -> Vocabulary:
        """From the command-line syntax ``"cat, sofa; couch, floor"``."""
        items = [item for item in text.replace("\n", ",").split(",") if item.strip()]
        if not items:
            raise VocabularyError('the vocabulary is empty; pass e.g. --classes "cat, dog; puppy"')
        return cls.from_names(items)

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """One class per line (``;`` between synonyms). Blank lines and lines whose first non-blank
        character is ``#`` are skipped; a UTF-8 byte-order mark (Windows Notepad) is dropped."""
        path = Path(path)
        if path.is_dir():
            raise VocabularyError(f"classes file {path} is a folder; pass a text file")
        if not path.is_file():
            raise VocabularyError(f"classes file not found: {path} (check the path)")
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError:
            raise VocabularyError(f"{path} is not UTF-8 text; save it as UTF-8") from None
        kept = [
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        ]
        if not kept:
            raise VocabularyError(f"{path} names no classes; write one class per line")
        return cls.from_names(kept)

    @property
    def class_names(self) -> list[str]:
        """Display name of each class (its first name)."""
        return [names[0] for names in self.classes]

    @property
    def queries(self) -> list[str]:
        """Every name of every class, flattened in class order."""
        return [name for names in self.classes for name in names]

    @property
    def query_to_class(self) -> list[int]:
        """Class index of each entry of :attr:`queries`."""
        return [index for index, names in enumerate(self.classes) for _ in names]

    def __len__(self) -> int:
        return len(self.classes)


def _is_background(names: Sequence[str]) -> bool:
    return names[0].strip().lower() == "background"
