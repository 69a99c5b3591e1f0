"""Text diversification data of GKC (Han et al., "Global Knowledge Calibration for Fast
Open-Vocabulary Segmentation", ICCV 2023, section "Text Diversification"): synonym lists,
per-instance synonym scores and the per-iteration vocabulary rewrite.

- **Names.** COCO panoptic names are normalised as the official code does: remove "-merged", then
  "-other", then "-" -> " " ("wall-other-merged" -> "wall", "floor-wood" -> "floor wood").
- **Lists** ``{class name: [class name, synonym, ...]}``: the class's own name first; no string
  (case-insensitive) in two classes or equal to another class's name; underscores read as spaces.
  ``coco133_synonyms.json`` is vocaseg's own curation for the 133 classes, from WordNet noun
  lemmas with wrong senses removed; :func:`build_synonyms` regenerates raw lists from WordNet.
- **Scores** (optional): per non-crowd segment, CLIP's softmax over the class's synonyms, in the
  released per-image record format ``{file_name, image_id, segments_info: [{id, ori_category_id,
  syn_category: {synonym: probability}}]}``; vocaseg's files wrap the records with the SHA-256 of
  the list they were scored with.
- **Sampling** (released mode ``thresRand``): :func:`sample_vocabulary`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vocaseg.data.classlists import load_class_list
from vocaseg.errors import UserError, VocabularyError
from vocaseg.hashing import file_sha256
from vocaseg.io import atomic_open, write_json

SYNONYMS_FILE = "coco133_synonyms.json"
SCORES_FORMAT = "vocaseg.gkc.synonym_scores"
WORDNET_HELP = (
    "building synonym lists needs NLTK and its WordNet data; install them with "
    "pip install nltk && python -m nltk.downloader wordnet"
)


def normalize_class_name(name: str) -> str:
    """COCO panoptic name -> the name GKC uses ("sky-other-merged" -> "sky")."""
    return name.replace("-merged", "").replace("-other", "").replace("-", " ")


def coco133_class_names() -> list[str]:
    """The 133 COCO panoptic class names, normalised, in class-index order."""
    return [normalize_class_name(n) for n in load_class_list("coco_panoptic").class_names]


def _clean(name: Any, source: str, owner: str) -> str:
    if not isinstance(name, str) or not name.replace("_", " ").strip():
        raise VocabularyError(
            f"{source}: the synonyms of {owner!r} hold {name!r}; every synonym must be a "
            "non-empty string"
        )
    return " ".join(name.replace("_", " ").split())


def validate_synonyms(
    data: Any, class_names: Sequence[str], source: str = "synonym file"
) -> dict[str, list[str]]:
    """Checked synonym lists for ``class_names``, in their order; classes absent from ``data``
    get only their own name. Raises VocabularyError naming the first rule ``data`` breaks."""
    if not isinstance(data, Mapping) or not all(isinstance(v, list) for v in data.values()):
        raise VocabularyError(
            f"{source} must be a JSON object mapping each class name to a list of names"
        )
    unknown = [key for key in data if key not in class_names]
    if unknown:
        raise VocabularyError(
            f"{source} names {len(unknown)} unknown class(es): {', '.join(map(repr, unknown))}; "
            "keys must be the normalised class names (e.g. 'wall' for 'wall-other-merged')"
        )
    class_keys = {name.lower(): name for name in class_names}
    owner_of: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for name in class_names:
        names = [_clean(n, source, name) for n in data.get(name, [name])]
        if not names or names[0] != name:
            raise VocabularyError(
                f"{source}: the synonyms of {name!r} must start with the class's own name"
            )
        kept = list(dict.fromkeys(names))  # drop repeats, keep the order
        for synonym in kept[1:]:
            if synonym.lower() in class_keys:
                raise VocabularyError(
                    f"{source}: {synonym!r}, a synonym of {name!r}, is the name of class "
                    f"{class_keys[synonym.lower()]!r}; remove it from {name!r}"
                )
            other = owner_of.setdefault(synonym.lower(), name)
            if other != name:
                raise VocabularyError(
                    f"{source}: {synonym!r} is listed for both {other!r} and {name!r}; a name "
                    "may belong to one class only"
                )
        lists[name] = kept
    return lists


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabularyError(f"{what} {path} not found") from None
    except (OSError, ValueError) as err:
        raise VocabularyError(f"cannot read {what} {path}: {err}; fix or regenerate it") from None


def _shipped() -> Path:
    return Path(str(resources.files("vocaseg.data") / "classes" / SYNONYMS_FILE))


def load_synonyms(
    path: str | os.PathLike | None = None, class_names: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Validated synonym lists from ``path`` (default: the shipped COCO-133 curation) for
    ``class_names`` (default: the normalised COCO panoptic names)."""
    file = Path(path) if path is not None else _shipped()
    names = list(class_names) if class_names is not None else coco133_class_names()
    return validate_synonyms(_read_json(file, "synonym file"), names, source=str(file))


def synonyms_sha256(path: str | os.PathLike | None = None) -> str:
    """SHA-256 of a synonym file's bytes (default: the shipped one), logged and checkpointed."""
    file = Path(path) if path is not None else _shipped()
    return file_sha256(file)


def write_synonyms(path: str | os.PathLike, synonyms: Mapping[str, Sequence[str]]) -> None:
    """Write lists as JSON, one class per line, atomically."""
    lines = [f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(list(v), ensure_ascii=False)}"
             for k, v in synonyms.items()]  # fmt: skip
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("{\n" + ",\n".join(lines) + "\n}\n")


def _load_wordnet() -> Any:
    try:
        from nltk.corpus import wordnet
    except ImportError:
        raise UserError(WORDNET_HELP) from None
    try:
        wordnet.ensure_loaded()
    except LookupError:
        raise UserError(WORDNET_HELP) from None
    return wordnet


def build_synonyms(class_names: Sequence[str], wordnet: Any = None) -> dict[str, list[str]]:
    """Raw lists from WordNet: each class's own name, then the lemma names of every noun synset
    of the name (underscores -> spaces). Names equal to another class's name, and names found for
    two classes, are dropped. Wrong senses remain: curate the result by hand.

    ``wordnet`` is NLTK's ``nltk.corpus.wordnet`` (loaded when None) or an object with the same
    ``synsets(word, pos)`` / ``NOUN`` / ``lemma_names()`` interface.
    """
    wordnet = wordnet if wordnet is not None else _load_wordnet()
    raw: dict[str, list[str]] = {}
    for name in class_names:
        lemmas = [
            " ".join(lemma.replace("_", " ").split())
            for synset in wordnet.synsets(name.replace(" ", "_"), pos=wordnet.NOUN)
            for lemma in synset.lemma_names()
        ]
        raw[name] = list(dict.fromkeys([name, *lemmas]))
    claims: dict[str, set[str]] = {}
    for name, names in raw.items():
        for synonym in names:
            claims.setdefault(synonym.lower(), set()).add(name)
    class_keys = {name.lower() for name in class_names}
    return {
        name: [name]
        + [s for s in names[1:] if s.lower() not in class_keys and len(claims[s.lower()]) == 1]
        for name, names in raw.items()
    }


@dataclass(frozen=True)
class SynonymScores:
    """Per-instance synonym scores: image id -> segment id -> {synonym: probability}."""

    images: dict[int, dict[int, dict[str, float]]]
    synonyms_sha256: str | None

    def for_segments(self, image_id: int, segment_ids: Sequence[int]) -> list[dict | None]:
        """Scores of each segment of an image, in the given order (None where not scored)."""
        segments = self.images.get(int(image_id), {})
        return [segments.get(int(i)) for i in segment_ids]


def write_synonym_scores(
    path: str | os.PathLike, records: Sequence[Mapping[str, Any]], synonyms_sha256: str
) -> None:
    """Write released-format per-image records with the hash of the list they were scored with."""
    write_json(
        path,
        {"format": SCORES_FORMAT, "synonyms_sha256": synonyms_sha256, "annotations": list(records)},
    )


def read_synonym_scores(
    path: str | os.PathLike, expected_sha256: str | None = None
) -> SynonymScores:
    """Read a score file (vocaseg's, or a bare released list of records). With
    ``expected_sha256``, a file scored with another synonym list is an error."""
    data = _read_json(Path(path), "synonym score file")
    sha = data.get("synonyms_sha256") if isinstance(data, dict) else None
    records = data.get("annotations") if isinstance(data, dict) else data
    try:
        images = {
            int(record["image_id"]): {
                int(segment["id"]): {
                    " ".join(k.replace("_", " ").split()): float(v)
                    for k, v in segment["syn_category"].items()
                }
                for segment in record["segments_info"]
            }
            for record in records
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise VocabularyError(
            f"synonym score file {path} is not in the score format (per-image records with "
            f"image_id and segments_info[id, syn_category]): {err!r}"
        ) from None
    if expected_sha256 is not None and sha != expected_sha256:
        raise VocabularyError(
            f"synonym score file {path} was scored with synonym list {str(sha)[:12]}, not the "
            f"loaded list {expected_sha256[:12]}; re-run 'vocaseg gkc score-synonyms'"
        )
    return SynonymScores(images, sha)


def sample_vocabulary(
    class_names: Sequence[str],
    synonyms: Mapping[str, Sequence[str]],
    labels: Sequence[int],
    rng: np.random.Generator,
    scores: Sequence[Mapping[str, float] | None] | None = None,
    threshold: float = 0.1,
) -> tuple[list[str], list[int]]:
    """One image's vocabulary and labels after renaming each segment with a drawn synonym.

    For each segment (class ``labels[i]``) a name w is drawn uniformly from the class's synonyms,
    restricted to those scoring above ``threshold`` when ``scores[i]`` is given; when none
    qualifies, w is the class name. Column c of the vocabulary starts as ``class_names[c]``; the
    first segment of class c that draws a name claims column c (renaming it to w when w differs);
    a later segment of c whose name differs from column c's gets the column of w among the names
    appended after the class names, appending it when new. So column ``new_labels[i]`` always
    holds the name segment i drew.
    """
    vocabulary = list(class_names)
    claimed: set[int] = set()
    appended: dict[str, int] = {}
    new_labels = []
    for index, label in enumerate(labels):
        base = class_names[label]
        options = list(synonyms.get(base, [base]))
        segment_scores = scores[index] if scores is not None else None
        if segment_scores is not None:
            options = [w for w in options if segment_scores.get(w, 0.0) > threshold]
        name = options[int(rng.integers(len(options)))] if options else base
        if name == vocabulary[label] or label not in claimed:
            vocabulary[label] = name
            claimed.add(label)
            new_labels.append(label)
            continue
        if name not in appended:
            appended[name] = len(vocabulary)
            vocabulary.append(name)
        new_labels.append(appended[name])
    return vocabulary, new_labels
