"""Background protocols: how a vocabulary's background class is scored and how class scores become
labels. Every method's ``finalize`` ends in one of these, so ``vocaseg segment`` and ``vocaseg eval``
give the same image the same labels, and every result records which protocol ran (they are not
comparable with each other; see docs/protocols.md).

| id | scored vocabulary | rule on the class scores |
|---|---|---|
| ``bg:none`` | the classes | argmax (no background notion, e.g. VOC-20 with background ignored) |
| ``bg:prompt`` | background class named by ``names`` (ODISE / FC-CLIP PAS-21) | argmax |
| ``bg:threshold`` | background class scored (by ``names`` if given) | best score < ``prob_thd`` → background; classes with at most ``area_thd`` of the foreground area dropped (SCLIP) |
| ``bg:groupvit`` | background not scored | best score < ``prob_thd`` → background (GroupViT, ZeroSeg) |
| ``bg:catseg-20b`` | foreground classes + ``names`` as distractors | a distractor winning → background (CAT-Seg VOC-20b) |

The background class is ``vocabulary.background`` (a class named "background" is marked by
default). A protocol that needs one, given a vocabulary without it, appends a class "background"
(:meth:`BackgroundProtocol.prepare`). Scores are probabilities or calibrated scores as each method's
``finalize`` produces them, ``[B, K, H, W]``; the argmax of :meth:`BackgroundProtocol.apply` is
the label map over the original vocabulary. :meth:`BackgroundProtocol.labels` gives that argmax
from class scores that arrive a chunk of classes at a time (many classes), without holding them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from vocaseg.errors import ConfigError
from vocaseg.scoring import RunningArgmax, drop_small_classes, set_background_where, small_classes
from vocaseg.text.vocab import Vocabulary

BACKGROUND_NAME = "background"

#: Class scores over the scored vocabulary, a chunk at a time: (first class, scores [B, k, H, W]).
ScoreChunks = Callable[[], Iterable[tuple[int, Tensor]]]


@dataclass(frozen=True)
class BackgroundProtocol:
    """``bg:none``: argmax over the classes as they are. Subclasses are the other protocols."""

    id: ClassVar[str] = "bg:none"
    #: Labels are the argmax over the scored classes' scores (mapped to ``vocabulary``) and
    #: nothing else: any scores with the same per-pixel order give the same labels.
    argmax_only: ClassVar[bool] = True
    prob_thd: float = 0.0
    area_thd: float = 0.0
    names: tuple[str, ...] = ()

    def prepare(self, vocabulary: Vocabulary) -> Vocabulary:
        """The vocabulary to label with: unchanged, or with a "background" class appended when
        this protocol needs one and ``vocabulary`` has none."""
        if self.id == "bg:none" or vocabulary.background is not None:
            return vocabulary
        return vocabulary.with_background(BACKGROUND_NAME)

    def scored_vocabulary(self, vocabulary: Vocabulary) -> Vocabulary:
        """The vocabulary the model encodes and scores for ``vocabulary``."""
        return vocabulary

    def apply(
        self, scores: Tensor, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        """Class scores over :meth:`scored_vocabulary` [B, K', H, W] -> [B, K, H, W] over
        ``vocabulary`` (argmax = label). ``channel`` [B, 1, H, W]: background scores a method
        computed itself (``SegmentationModel.background_scores``); only bg:groupvit takes them."""
        self._no_channel(channel)
        return scores

    def labels(
        self, chunks: ScoreChunks, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        """``apply(scores, vocabulary, channel).argmax(1)`` [B, H, W] from the scores over
        :meth:`scored_vocabulary` given a chunk of classes at a time by ``chunks()`` (called
        again when the rule needs a second look, e.g. ``area_thd``)."""
        self._no_channel(channel)
        return _argmax(chunks, torch.arange(len(vocabulary))).index

    def _no_channel(self, channel: Tensor | None) -> None:
        if channel is not None:
            raise ValueError(f"{self.id} has its own background rule; only bg:groupvit takes one")

    def record(self) -> dict[str, Any]:
        """What to write next to results."""
        return {
            "id": self.id,
            "prob_thd": self.prob_thd,
            "area_thd": self.area_thd,
            "names": list(self.names) or None,
        }

    def _background(self, vocabulary: Vocabulary) -> int:
        if vocabulary.background is None:
            raise ConfigError(
                f"background protocol {self.id} needs a background class, and the vocabulary "
                f"has none; add a class named {BACKGROUND_NAME!r} or use bg:none"
            )
        return vocabulary.background


class PromptBackground(BackgroundProtocol):
    """``bg:prompt``: the background class is scored like any other, named by ``names``."""

    id = "bg:prompt"

    def scored_vocabulary(self, vocabulary: Vocabulary) -> Vocabulary:
        if not self.names:
            return vocabulary
        return vocabulary.rename(self._background(vocabulary), self.names)


class ThresholdBackground(PromptBackground):
    """``bg:threshold`` (SCLIP family): low-confidence pixels go to the background class, which
    is scored like any class when the vocabulary names it (a benchmark's "background") and only
    filled by the rule when it was added for the rule (``Vocabulary.background_scored``)."""

    id = "bg:threshold"
    argmax_only = False

    def scored_vocabulary(self, vocabulary: Vocabulary) -> Vocabulary:
        if vocabulary.background is not None and not vocabulary.background_scored:
            return vocabulary.without(vocabulary.background)
        return super().scored_vocabulary(vocabulary)

    def apply(
        self, scores: Tensor, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        self._no_channel(channel)
        background = self._background(vocabulary)
        if not vocabulary.background_scored:
            scores = _insert_channel(scores, background)
        if self.area_thd > 0:
            scores = drop_small_classes(scores, self.area_thd, background)
        if self.prob_thd > 0:
            scores = set_background_where(scores, background, scores.amax(1) < self.prob_thd)
        return scores

    def labels(
        self, chunks: ScoreChunks, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        self._no_channel(channel)
        background = self._background(vocabulary)
        classes = torch.arange(len(vocabulary))
        zero = None  # the unscored background's channel of zeros
        if not vocabulary.background_scored:
            classes, zero = _skip(classes, background), background
        best = _argmax(chunks, classes, zero=zero)
        if self.area_thd > 0:
            small = small_classes(best.index, len(vocabulary), self.area_thd, background)
            best = _argmax(chunks, classes, zero=zero, dropped=small)
        if self.prob_thd > 0:
            return torch.where(best.value < self.prob_thd, background, best.index)
        return best.index


def _insert_channel(scores: Tensor, index: int, channel: Tensor | None = None) -> Tensor:
    """[B, K-1, H, W] -> [B, K, H, W] with ``channel`` (default zeros) at ``index``."""
    if channel is None:
        channel = scores.new_zeros(scores.shape[0], 1, *scores.shape[2:])
    return torch.cat([scores[:, :index], channel, scores[:, index:]], dim=1)


def _skip(classes: Tensor, index: int) -> Tensor:
    """Class indices of the scored classes when class ``index`` is not scored: [K] -> [K - 1]."""
    return torch.cat([classes[:index], classes[index + 1 :]])


def _argmax(
    chunks: ScoreChunks,
    classes: Tensor,
    zero: int | None = None,
    dropped: Tensor | None = None,
) -> RunningArgmax:
    """Best score and class per pixel over every chunk; scored class i is class ``classes[i]``.
    ``zero``: a class whose scores are all zero (an unscored background); ``dropped`` [B, K] bool:
    classes whose scores count as zero (``area_thd``)."""
    best = RunningArgmax()
    for start, scores in chunks():
        index = classes[start : start + scores.shape[1]].to(scores.device)
        if dropped is not None:
            scores = scores.masked_fill(dropped.to(scores.device)[:, index, None, None], 0.0)
        best.update(scores, index)
    if zero is not None:
        assert best.value is not None
        zeros = best.value.new_zeros(best.value.shape[0], 1, *best.value.shape[1:])
        best.update(zeros, torch.tensor([zero], device=zeros.device))
    return best


class GroupViTBackground(BackgroundProtocol):
    """``bg:groupvit``: the background is never scored; it takes pixels whose best score is below
    ``prob_thd`` (GroupViT, Xu et al. CVPR 2022; ZeroSeg's thresholds)."""

    id = "bg:groupvit"
    argmax_only = False

    def scored_vocabulary(self, vocabulary: Vocabulary) -> Vocabulary:
        return vocabulary.without(self._background(vocabulary))

    def apply(
        self, scores: Tensor, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        """``channel``: the method's own background scores (ZeroSeg applies GroupViT's rule per
        window) take the background's place, and the rule is not applied again."""
        background = self._background(vocabulary)
        full = _insert_channel(scores, background, channel)
        if channel is not None:
            return full
        return set_background_where(full, background, scores.amax(1) < self.prob_thd)

    def labels(
        self, chunks: ScoreChunks, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        background = self._background(vocabulary)
        best = _argmax(chunks, _skip(torch.arange(len(vocabulary)), background))
        assert best.value is not None
        below = best.value < self.prob_thd  # the best scored class is below the threshold
        if channel is not None:
            best.update(channel, torch.tensor([background], device=channel.device))
            return best.index
        best.update(torch.zeros_like(best.value)[:, None], torch.tensor([background]))
        return torch.where(below, background, best.index)


class CatSegBackground(BackgroundProtocol):
    """``bg:catseg-20b`` (CAT-Seg, Cho et al. CVPR 2024): ``names`` are distractor classes
    (the 39 PC-59 classes that are not VOC classes); a pixel won by one is background."""

    id = "bg:catseg-20b"

    def scored_vocabulary(self, vocabulary: Vocabulary) -> Vocabulary:
        if not self.names:
            raise ConfigError(
                "bg:catseg-20b needs its distractor names: set background_names to a file or "
                "class list with one name per line (e.g. voc20b.catseg_extra)"
            )
        kept = vocabulary.without(self._background(vocabulary))
        return Vocabulary(kept.classes + tuple((name,) for name in self.names))

    def apply(
        self, scores: Tensor, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        self._no_channel(channel)
        background = self._background(vocabulary)
        foreground = len(vocabulary) - 1
        distractor = scores[:, foreground:].amax(dim=1, keepdim=True)  # [B, 1, H, W]
        kept = scores[:, :foreground]
        return torch.cat([kept[:, :background], distractor, kept[:, background:]], dim=1)

    def labels(
        self, chunks: ScoreChunks, vocabulary: Vocabulary, channel: Tensor | None = None
    ) -> Tensor:
        self._no_channel(channel)
        background = self._background(vocabulary)
        kept = _skip(torch.arange(len(vocabulary)), background)  # foreground classes
        classes = torch.cat([kept, torch.full((len(self.names),), background)])
        return _argmax(chunks, classes).index


PROTOCOLS: dict[str, type[BackgroundProtocol]] = {
    cls.id: cls
    for cls in (
        BackgroundProtocol,
        PromptBackground,
        ThresholdBackground,
        GroupViTBackground,
        CatSegBackground,
    )
}


def make_protocol(
    background: str = "bg:none",
    prob_thd: float = 0.0,
    area_thd: float = 0.0,
    names: Sequence[str] = (),
) -> BackgroundProtocol:
    """The protocol ``background`` with its settings. ``bg:none`` with a threshold set means
    ``bg:threshold`` (a threshold always has somewhere to send pixels)."""
    if background not in PROTOCOLS:
        raise ConfigError(
            f"unknown background protocol {background!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    for key, value in (("prob_thd", prob_thd), ("area_thd", area_thd)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key} must lie in [0, 1], got {value}")
    if background == "bg:none" and (prob_thd > 0 or area_thd > 0):
        background = "bg:threshold"
    return PROTOCOLS[background](float(prob_thd), float(area_thd), tuple(names))


def parse_background(text: str) -> dict[str, Any]:
    """The command-line form ``bg:threshold,prob_thd=0.1,area_thd=0.1,names=FILE`` -> settings
    (``background``, ``prob_thd``, ``area_thd``, ``background_names``) for a model config."""
    name, *items = [part.strip() for part in text.split(",") if part.strip()] or ["bg:none"]
    if name not in PROTOCOLS:
        raise ConfigError(
            f"unknown background protocol {name!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    settings: dict[str, Any] = {"background": name}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("prob_thd", "area_thd", "names"):
            raise ConfigError(
                f"background option {item!r} must be prob_thd=X, area_thd=X or names=FILE"
            )
        if key == "names":
            settings["background_names"] = value
            continue
        try:
            settings[key] = float(value)
        except ValueError:
            raise ConfigError(f"background option {key}={value!r} must be a number") from None
    return settings


__all__ = [
    "BACKGROUND_NAME",
    "PROTOCOLS",
    "BackgroundProtocol",
    "make_protocol",
    "parse_background",
]
