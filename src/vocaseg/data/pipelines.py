"""Training-data pipelines: the ``data.pipeline`` key of a training config picks one.

A pipeline turns the config and the model into :class:`TrainData`: an indexable source whose
``sample(index, rng)`` returns one training example, a ``collate_fn`` for a list of them, and the
vocabulary / split the model trains on. Randomness comes only from the ``rng`` the trainer passes
(seeded by run seed, epoch and sample index), so augmentation is reproducible whatever the number
of workers and exactly resumable.

Pipelines:

- ``semantic``: a labelled dataset (:func:`vocaseg.data.load_dataset`) through
  :class:`vocaseg.data.transforms.TrainTransform`, with the zero-shot label handling of
  specs/tagclip.md §3/§5: ``inductive`` maps seen ids to their position in the seen list and unseen
  ids to ignore in ``label``, and adds the unmasked ``label_full`` only when the model lists it in
  ``train_needs()``; ``transductive`` and ``supervised`` keep dataset ids.

Other methods register their own (label-free image folders with cached teacher targets for
ZeroSeg, instance masks with a list-keeping collate for GKC) with :func:`register_pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from vocaseg.errors import ConfigError
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from vocaseg.engine.train_config import TrainConfig
    from vocaseg.models.base import SegmentationModel


class SampleSource(Protocol):
    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]: ...


@dataclass
class TrainData:
    """What the trainer needs from a pipeline.

    ``vocabulary``: the dataset's classes with ``.seen`` set for zero-shot settings, or ``None``
    for label-free data; ``split``: the recorded zero-shot setting and seen/unseen class names.
    """

    source: SampleSource
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]]
    vocabulary: Vocabulary | None
    setting: str = "supervised"
    split: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


PipelineBuilder = Callable[["TrainConfig", "SegmentationModel"], TrainData]
_PIPELINES: dict[str, PipelineBuilder] = {}


def register_pipeline(name: str) -> Callable[[PipelineBuilder], PipelineBuilder]:
    """Decorator registering ``builder(config, model) -> TrainData`` under ``name``."""

    def decorate(builder: PipelineBuilder) -> PipelineBuilder:
        _PIPELINES[name] = builder
        return builder

    return decorate


def build_pipeline(cfg: TrainConfig, model: SegmentationModel) -> TrainData:
    """The training data of ``cfg.data.pipeline`` for ``model``."""
    if cfg.data.pipeline not in _PIPELINES:
        raise ConfigError(
            f"unknown data.pipeline {cfg.data.pipeline!r}; available: {', '.join(sorted(_PIPELINES))}"
        )
    return _PIPELINES[cfg.data.pipeline](cfg, model)


def collate_stack(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors of equal shape along a new batch dimension; keep everything else as lists."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


def resolve_seen(
    class_names: Sequence[str], dataset_seen: Sequence[int] | None, unseen: Sequence[str | int]
) -> tuple[int, ...]:
    """Seen class ids: all but ``unseen`` (names or ids) if given, else the dataset's split."""
    if not unseen:
        if dataset_seen is None:
            raise ConfigError(
                "a zero-shot setting needs a seen/unseen split, and this dataset ships none; "
                "list the unseen classes in data.zero_shot.unseen"
            )
        return tuple(dataset_seen)
    lookup = {name.lower(): index for index, name in enumerate(class_names)}
    ids = set()
    for item in unseen:
        if isinstance(item, int):
            if not 0 <= item < len(class_names):
                raise ConfigError(
                    f"data.zero_shot.unseen: class id {item} is outside 0..{len(class_names) - 1}"
                )
            ids.add(item)
        elif item.lower() in lookup:
            ids.add(lookup[item.lower()])
        else:
            raise ConfigError(
                f"data.zero_shot.unseen: {item!r} is not a class of the dataset; its classes are "
                f"{', '.join(class_names)}"
            )
    return tuple(i for i in range(len(class_names)) if i not in ids)


class SemanticSource:
    """Dataset items through the training transform, then the zero-shot label mapping."""

    def __init__(
        self,
        dataset: Any,
        transform: Callable[..., dict[str, Any]],
        seen_lut: torch.Tensor | None,
        keep_full: bool,
    ) -> None:
        self.dataset, self.transform = dataset, transform
        self.seen_lut, self.keep_full = seen_lut, keep_full
        self.ignore_index = int(dataset.ignore_index)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        out = self.transform(self.dataset[index], rng)
        label = out["label"]  # [h, w] dataset ids, ignore_index where unlabelled or padded
        if self.keep_full:
            out["label_full"] = label.clone()
        if self.seen_lut is not None:
            valid = label != self.ignore_index
            out["label"] = torch.where(
                valid, self.seen_lut[label.clamp(0, len(self.seen_lut) - 1)], self.ignore_index
            )
        return out


@register_pipeline("semantic")
def semantic_pipeline(cfg: TrainConfig, model: SegmentationModel) -> TrainData:
    """Labelled images with MMSeg-style augmentation (specs/tagclip.md §6) and zero-shot labels."""
    from vocaseg.data import load_dataset

    data = cfg.data
    if not data.dataset:
        raise ConfigError("data.dataset is empty; name a dataset id (e.g. voc20) or 'folder'")
    dataset = load_dataset(data.dataset, root=data.root, split=data.split, layout=data.layout)
    return semantic_data(dataset, cfg, model)


def semantic_data(dataset: Any, cfg: TrainConfig, model: SegmentationModel) -> TrainData:
    """:class:`TrainData` for a labelled ``dataset`` (the ``vocaseg.data`` reader interface)."""
    from vocaseg.data.transforms import TrainTransform

    data = cfg.data
    names = list(dataset.class_names)
    setting = data.zero_shot.setting
    options = {
        "mean": model.preprocess.mean,
        "std": model.preprocess.std,
        "ignore_index": dataset.ignore_index,
        **data.transform,
    }
    try:
        transform = TrainTransform(**options)
    except TypeError as err:
        raise ConfigError(f"data.transform: {err}") from None

    seen_lut = None
    keep_full = False
    if setting == "supervised":
        vocabulary = Vocabulary(dataset.classes.classes)
        seen = tuple(range(len(names)))
    else:
        seen = resolve_seen(names, dataset.seen, data.zero_shot.unseen)
        vocabulary = Vocabulary(dataset.classes.classes, seen=seen)
        if setting == "inductive":
            seen_lut = torch.full((len(names),), dataset.ignore_index, dtype=torch.long)
            seen_lut[list(seen)] = torch.arange(len(seen))
            keep_full = "label_full" in model.train_needs()
    split = {
        "setting": setting,
        "seen": [names[i] for i in seen],
        "unseen": [n for i, n in enumerate(names) if i not in seen],
    }
    return TrainData(
        source=SemanticSource(dataset, transform, seen_lut, keep_full),
        collate_fn=collate_stack,
        vocabulary=vocabulary,
        setting=setting,
        split=split,
        record=dict(getattr(dataset, "record", {})),
    )
