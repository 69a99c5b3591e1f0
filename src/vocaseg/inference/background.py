"""Named background protocols for datasets with a background class (specs/datasets-and-metrics.md
§4.1). They are not comparable with each other, so every result records which one ran.

| id | model vocabulary | prediction rule |
|---|---|---|
| ``bg:none`` | the dataset's classes | argmax (background is ignored in GT, e.g. VOC-20) |
| ``bg:catseg-20b`` | 20 foreground + extra distractor names | argmax; ids ≥ 20 → 20 (CAT-Seg VOCb) |
| ``bg:prompt`` | class 0 = a list of background synonyms | argmax (ODISE / FC-CLIP PAS-21) |
| ``bg:threshold`` | class 0 = stuff words or "background" | max prob < prob_thd → 0 |
| ``bg:groupvit`` | foreground only | max prob < threshold → 0, else class + 1 |

The protocols read the class scores that ``predict_scores`` returns (``finalize``) as probabilities:
every method already turns its logits into them (MaskCLIP: softmax(logit_scale·cos) with the model's
own ``logit_scale``, then the max over synonyms). Only for a model that returns raw cosines does the
option ``logit_scale=S`` apply softmax(S·scores) first.

The pure functions work on scores [B, K, H, W] or label maps [B, H, W]; :class:`BackgroundProtocol`
bundles a protocol's vocabulary rule and prediction rule for the evaluator, and
:func:`parse_background` reads the command-line form ``bg:threshold,prob_thd=0.1,area_thd=0.1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vocaseg.errors import UserError
from vocaseg.text.vocab import Vocabulary

PROTOCOLS = ("bg:none", "bg:catseg-20b", "bg:prompt", "bg:threshold", "bg:groupvit")


def clamp_to_background(labels: Tensor, background: int = 20) -> Tensor:
    """``bg:catseg-20b``: predictions ≥ ``background`` (distractor names) become ``background``."""
    return labels.clamp(max=background)


def with_background_names(
    vocabulary: Vocabulary, names: Sequence[str], index: int = 0
) -> Vocabulary:
    """``vocabulary`` with class ``index`` (the background) named by ``names`` (its synonyms)."""
    classes = list(vocabulary.classes)
    classes[index] = tuple(names)
    return Vocabulary(tuple(classes), vocabulary.seen)


def class_probabilities(
    scores: Tensor, logit_scale: float | None = None, query_to_class: Sequence[int] | None = None
) -> Tensor:
    """softmax(logit_scale · scores) over dim 1, then the max over each class's queries.

    ``scores`` [B, Q, H, W]; ``logit_scale=None`` means the scores are already probabilities.
    ``query_to_class`` (length Q) groups synonym queries into K classes -> [B, K, H, W].
    """
    probs = scores.float() if logit_scale is None else (logit_scale * scores.float()).softmax(1)
    if query_to_class is None:
        return probs
    return max_over_queries(probs, query_to_class)


def max_over_queries(
    probs: Tensor, query_to_class: Sequence[int], num_classes: int | None = None
) -> Tensor:
    """[B, Q, H, W] query probabilities -> [B, K, H, W]: the max over each class's queries."""
    if num_classes is None:
        num_classes = max(query_to_class) + 1
    if len(query_to_class) == num_classes:
        return probs
    index = torch.as_tensor(list(query_to_class), device=probs.device).view(1, -1, 1, 1)
    out = probs.new_full((probs.shape[0], num_classes, *probs.shape[2:]), float("-inf"))
    return out.scatter_reduce(1, index.expand_as(probs), probs, reduce="amax")


def drop_small_classes(probs: Tensor, area_thd: float, background: int = 0) -> Tensor:
    """Zero the probabilities [B, K, H, W] of every class whose predicted area is at most
    ``area_thd`` × the image's predicted non-background area (SCLIP's VOC-21 rule)."""
    labels = probs.argmax(1)
    classes = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1)
    area = (labels[:, None] == classes).flatten(2).sum(-1)  # [B, K]
    foreground = area.sum(1, keepdim=True) - area[:, background : background + 1]
    small = (area <= area_thd * foreground) & (area > 0)
    small[:, background] = False
    return probs.masked_fill(small[..., None, None], 0.0)


def threshold_background(
    scores: Tensor,
    prob_thd: float,
    *,
    logit_scale: float | None = None,
    query_to_class: Sequence[int] | None = None,
    area_thd: float | None = None,
    background: int = 0,
) -> Tensor:
    """``bg:threshold`` (SCLIP family): labels [B, H, W] where max prob < ``prob_thd`` → background.

    With ``area_thd``, a class whose predicted area is ≤ area_thd × the image's predicted
    non-background area has its probabilities zeroed before the argmax (SCLIP, VOC-21).
    """
    probs = class_probabilities(scores, logit_scale, query_to_class)  # [B, K, H, W]
    if area_thd:
        probs = drop_small_classes(probs, area_thd, background)
    best, labels = probs.max(1)
    return labels.masked_fill(best < prob_thd, background)


def groupvit_background(
    scores: Tensor, threshold: float, *, logit_scale: float | None = None
) -> Tensor:
    """``bg:groupvit``: scores over foreground classes only [B, K-1, H, W] -> labels [B, H, W] in
    dataset ids (background 0, class k → k + 1); max prob < ``threshold`` → background."""
    probs = class_probabilities(scores, logit_scale)
    best, labels = probs.max(1)
    return (labels + 1).masked_fill(best < threshold, 0)


def _read_names(path: str | None, what: str) -> list[str]:
    if path is None:
        return []
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{what} names file not found: {file} (one name per line)")
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class BackgroundProtocol:
    """One named protocol with its parameters: which vocabulary the model scores and how scores
    become dataset labels."""

    id: str = "bg:none"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id not in PROTOCOLS:
            raise UserError(
                f"unknown background protocol {self.id!r}; choose one of {', '.join(PROTOCOLS)}"
            )

    def vocabulary(self, vocabulary: Vocabulary) -> Vocabulary:
        """The vocabulary to encode for a dataset whose classes are ``vocabulary``."""
        p = self.params
        if self.id == "bg:catseg-20b":
            background = int(p.get("background", 20))
            extra = _read_names(p.get("extra"), "bg:catseg-20b extra")
            if not extra:
                raise UserError(
                    "bg:catseg-20b needs its distractor names: bg:catseg-20b,extra=FILE "
                    "(CAT-Seg's 39 PC-59 names that are not VOC classes, one per line)"
                )
            classes = list(vocabulary.classes[:background]) + [(n,) for n in extra]
            return Vocabulary(tuple(classes))
        if self.id in ("bg:prompt", "bg:threshold") and p.get("names"):
            return with_background_names(vocabulary, _read_names(p["names"], self.id))
        if self.id == "bg:groupvit":
            return Vocabulary(vocabulary.classes[1:])
        return vocabulary

    def labels(self, scores: Tensor) -> Tensor:
        """Class probabilities [B, K', H, W] over :meth:`vocabulary` -> dataset labels [B, H, W]
        (cosines with the ``logit_scale`` option)."""
        p = self.params
        scale = p.get("logit_scale")  # None: the scores are already probabilities
        scale = None if scale in (None, "none", 0) else float(scale)
        if self.id == "bg:catseg-20b":
            return clamp_to_background(scores.argmax(1), int(p.get("background", 20)))
        if self.id == "bg:threshold":
            area = p.get("area_thd")
            return threshold_background(
                scores,
                float(p.get("prob_thd", 0.1)),
                logit_scale=scale,
                area_thd=float(area) if area is not None else None,
            )
        if self.id == "bg:groupvit":
            return groupvit_background(scores, float(p.get("threshold", 0.95)), logit_scale=scale)
        return scores.argmax(1)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, **self.params}


def parse_background(text: str | BackgroundProtocol | None) -> BackgroundProtocol:
    """``"bg:threshold,prob_thd=0.1,area_thd=0.1"`` -> :class:`BackgroundProtocol` (None -> bg:none)."""
    if text is None:
        return BackgroundProtocol()
    if isinstance(text, BackgroundProtocol):
        return text
    name, *items = [part.strip() for part in text.split(",") if part.strip()]
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"background option {item!r} must look like key=value")
        try:
            params[key] = float(value)
        except ValueError:
            params[key] = value
    return BackgroundProtocol(name, params)
