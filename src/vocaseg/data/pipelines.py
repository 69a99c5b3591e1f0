"""Training-data pipelines: the method's registry entry names one (``data.pipeline`` may override it).

A pipeline turns the training config and the model into :class:`TrainData`: an indexable source
whose ``sample(index, rng)`` returns one training example, the :class:`~vocaseg.data.batch.TrainSpec`
the model learns from, and which per-image keys vary in size (``list_keys``, kept as lists when
collated). Randomness comes only from the ``rng`` the trainer passes (seeded by run seed, epoch and
sample index), so augmentation is reproducible whatever the number of workers and exactly
resumable. A pipeline may also register a ``prepare`` stage that runs once, on every process,
before training (e.g. building a teacher-target cache, sharded over the processes).

A source must be cheap to pickle (DataLoader workers may be spawned): open files lazily in
``sample``, never hold memory maps or file handles from ``__init__``.

Pipelines:

- ``semantic``: a labelled dataset (:func:`vocaseg.data.load_dataset`) through
  :class:`vocaseg.data.transforms.TrainTransform`, with the zero-shot label handling of ZegCLIP
  and TagCLIP: ``inductive`` maps seen ids to their position in the seen list and unseen ids to
  ignore in ``label``, and adds the unmasked ``label_full`` only when the model lists it in
  ``train_needs()``; ``transductive`` and ``supervised`` keep dataset ids.
- ``gkc_panoptic``: COCO panoptic instances for GKC (:mod:`vocaseg.data.gkc_pipeline`).
- ``image_folder`` (:mod:`vocaseg.data.distillation`): unlabelled images of any folder with
  multi-scale teacher targets, cached or computed online (ZeroSeg).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from vocaseg.data.batch import TrainSpec
from vocaseg.dist import DistInfo
from vocaseg.errors import ConfigError
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from vocaseg.engine.train_config import TrainConfig

# Modules that register the built-in pipelines when imported.
_PIPELINE_MODULES = [
    "vocaseg.data.pipelines",
    "vocaseg.data.gkc_pipeline",
    "vocaseg.data.distillation",
]


class SampleSource(Protocol):
    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PipelineContext:
    """Where the pipeline runs: this process's rank and world size, and its device."""

    dist: DistInfo = field(default_factory=DistInfo)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class TrainData:
    """What the trainer needs from a pipeline.

    ``spec``: what the model learns from; ``list_keys``: per-image entries of varying size (never
    stacked); ``split``: the recorded zero-shot setting and seen/unseen class names; ``record``:
    the dataset record written into checkpoints.
    """

    source: SampleSource
    spec: TrainSpec
    list_keys: tuple[str, ...] = ()
    split: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(samples, self.list_keys)


PipelineBuilder = Callable[["TrainConfig", Any, PipelineContext], TrainData]
PipelinePrepare = Callable[["TrainConfig", Any, PipelineContext], None]
PipelineGenerate = Callable[["TrainConfig", PipelineContext], None]


@dataclass(frozen=True)
class Pipeline:
    """``generate(config, context)``: write generated data the config asks for (quickstarts,
    tests), first of all, so the datasets can be checked before anything is built;
    ``prepare(config, model, context)``: work once before training that needs the model (e.g. a
    teacher cache); ``build(config, model, context)``: the training data."""

    build: PipelineBuilder
    prepare: PipelinePrepare | None = None
    generate: PipelineGenerate | None = None


_PIPELINES: dict[str, Pipeline] = {}


def register_pipeline(
    name: str,
    prepare: PipelinePrepare | None = None,
    generate: PipelineGenerate | None = None,
) -> Callable[[PipelineBuilder], PipelineBuilder]:
    """Decorator registering ``builder(config, model, context) -> TrainData`` under ``name``,
    with optional ``generate`` and ``prepare`` stages (see :class:`Pipeline`)."""

    def decorate(builder: PipelineBuilder) -> PipelineBuilder:
        _PIPELINES[name] = Pipeline(builder, prepare, generate)
        return builder

    return decorate


def get_pipeline(name: str) -> Pipeline:
    for module in _PIPELINE_MODULES:
        importlib.import_module(module)
    if name not in _PIPELINES:
        raise ConfigError(
            f"unknown data.pipeline {name!r}; available: {', '.join(sorted(_PIPELINES))}"
        )
    return _PIPELINES[name]


def collate(samples: list[dict[str, Any]], list_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Stack tensors along a new batch dimension; ``list_keys`` and non-tensors stay lists.

    A tensor key whose shapes differ between samples is an error: declare it in ``list_keys``.
    """
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in list_keys or not isinstance(values[0], torch.Tensor):
            batch[key] = values
            continue
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ConfigError(
                f"batch key {key!r} has shapes {sorted(shapes)} across samples; a pipeline must "
                "declare per-image entries of varying size in TrainData.list_keys"
            )
        batch[key] = torch.stack(values)
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
def semantic_pipeline(cfg: TrainConfig, model: Any, context: PipelineContext) -> TrainData:
    """Labelled images with MMSeg-style augmentation (ZegCLIP/TagCLIP) and zero-shot labels."""
    from vocaseg.data import load_dataset

    data = cfg.data
    if not data.dataset:
        raise ConfigError("data.dataset is empty; name a dataset id (e.g. voc20) or 'folder'")
    dataset = load_dataset(data.dataset, root=data.root, split=data.split, layout=data.layout)
    return semantic_data(dataset, cfg, model)


def semantic_data(dataset: Any, cfg: TrainConfig, model: Any) -> TrainData:
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
    spec = TrainSpec(
        vocabulary=vocabulary,
        ignore_index=int(dataset.ignore_index),
        zero_shot=None if setting == "supervised" else setting,
    )
    return TrainData(
        source=SemanticSource(dataset, transform, seen_lut, keep_full),
        spec=spec,
        split=split,
        record=dict(getattr(dataset, "record", {})),
    )
