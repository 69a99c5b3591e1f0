"""Caption nouns for GKC's optional caption grounding (Han et al., ICCV 2023, implementation
details, after OVR-CNN, Zareian et al. CVPR 2021; docs/methods/gkc.md).

The released code POS-tags one COCO caption per image at each iteration (NLTK) and keeps the
words tagged NN, NNS, NNP or NNPS. Here the tagging runs once, offline
(``vocaseg gkc caption-nouns``), into a nouns file:

    {"format": "vocaseg-caption-nouns/1", "captions_sha256": "...", "captions_file": "...",
     "images": {"<image id>": [[noun, ...], ...one list per caption]}}

and training draws from it (:func:`sample_caption_words`): one caption, each noun dropped with
probability 0.25 (all kept when that would drop every one, as released), at most 5 kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vocaseg.errors import ConfigError, DatasetError, UserError
from vocaseg.hashing import file_sha256
from vocaseg.io import write_json

NOUNS_FORMAT = "vocaseg-caption-nouns/1"
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
DROP_PROB = 0.25
MAX_WORDS = 5
NLTK_HELP = (
    "caption nouns need NLTK and its tagger data: pip install nltk && python -m nltk.downloader "
    "punkt punkt_tab averaged_perceptron_tagger averaged_perceptron_tagger_eng"
)

Tagger = Callable[[str], Sequence[tuple[str, str]]]


def nltk_tagger() -> Tagger:
    """NLTK's tokenizer + POS tagger (the released code's), or a one-line error naming the install."""
    try:
        import nltk

        nltk.pos_tag(nltk.word_tokenize("a dog"))
    except (ImportError, LookupError):
        raise UserError(NLTK_HELP) from None
    return lambda text: nltk.pos_tag(nltk.word_tokenize(text))


def caption_nouns(caption: str, tagger: Tagger) -> list[str]:
    """The words of ``caption`` tagged as nouns, in order, repeats kept."""
    return [word for word, tag in tagger(caption) if tag in NOUN_TAGS]


def extract_caption_nouns(captions_json: str | os.PathLike, tagger: Tagger) -> dict[str, Any]:
    """The nouns file's content for an official COCO captions file (``captions_train2017.json``)."""
    path = Path(captions_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"captions file {path} not found; pass captions_train2017.json") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read captions file {path}: {err}") from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or any(
        not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str)
        for a in annotations
    ):
        raise DatasetError(
            f"{path} is not a COCO captions file (annotations of image_id and caption); pass "
            "captions_train2017.json"
        )
    images: dict[str, list[list[str]]] = {str(i["id"]): [] for i in data.get("images", [])}
    for annotation in sorted(annotations, key=lambda a: (a["image_id"], a.get("id", 0))):
        nouns = caption_nouns(annotation["caption"], tagger)
        images.setdefault(str(annotation["image_id"]), []).append(nouns)
    return {
        "format": NOUNS_FORMAT,
        "captions_file": path.name,
        "captions_sha256": file_sha256(path),
        "images": images,
    }


def write_caption_nouns(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    write_json(path, dict(record))


@dataclass(frozen=True)
class CaptionNouns:
    """A nouns file: per image id, one noun list per caption."""

    path: str
    sha256: str
    captions_sha256: str
    images: dict[int, list[list[str]]]

    def captions(self, image_id: int) -> list[list[str]]:
        return self.images.get(int(image_id), [])


def read_caption_nouns(path: str | os.PathLike) -> CaptionNouns:
    """Read a nouns file of ``vocaseg gkc caption-nouns``; a missing or foreign file is one line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"data.options.captions: {file} not found; write it with 'vocaseg gkc caption-nouns "
            "captions_train2017.json -o NOUNS_JSON'"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read the caption nouns file {file}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != NOUNS_FORMAT:
        raise DatasetError(
            f"{file} is not a caption nouns file ({NOUNS_FORMAT}); write it with 'vocaseg gkc "
            "caption-nouns captions_train2017.json -o NOUNS_JSON'"
        )
    images = {int(k): [list(map(str, c)) for c in v] for k, v in data["images"].items()}
    return CaptionNouns(str(file), file_sha256(file), str(data.get("captions_sha256")), images)


def sample_caption_words(
    captions: Sequence[Sequence[str]],
    rng: np.random.Generator,
    drop_prob: float = DROP_PROB,
    max_words: int = MAX_WORDS,
) -> list[str]:
    """One caption's nouns drawn for grounding: each dropped with ``drop_prob`` (none dropped when
    all would be), then at most ``max_words`` of them kept at random, in caption order."""
    if not captions:
        return []
    nouns = list(captions[int(rng.integers(len(captions)))])
    if not nouns:
        return []
    keep = rng.random(len(nouns)) > drop_prob
    if keep.any():
        nouns = [noun for noun, kept in zip(nouns, keep) if kept]
    if len(nouns) > max_words:
        chosen = np.sort(rng.choice(len(nouns), size=max_words, replace=False))
        nouns = [nouns[i] for i in chosen]
    return nouns


__all__ = [
    "NOUNS_FORMAT",
    "CaptionNouns",
    "caption_nouns",
    "extract_caption_nouns",
    "nltk_tagger",
    "read_caption_nouns",
    "sample_caption_words",
    "write_caption_nouns",
]
