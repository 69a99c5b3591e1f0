"""Typed training configuration: one flat YAML file per run fills :class:`TrainConfig`.

Sections: ``run`` (seed, output, precision, initial weights), ``model`` (its ``name`` plus the method
config passed to :func:`vocaseg.models.registry.create_model`), ``optim`` (AdamW, parameter-name
multipliers, clipping, accumulation), ``schedule`` (poly / cosine / step with warm-up, in iterations
or epochs), ``data`` (training pipeline, dataset, zero-shot setting), ``eval``, ``checkpoint`` and
``logging``. Unknown keys and wrong types are :class:`vocaseg.errors.ConfigError` before any work.
The shipped recipes (configs/) follow each method's paper and released configs (docs/methods/).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vocaseg.config import apply_overrides, from_dict, load_yaml
from vocaseg.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass
class RunConfig:
    """Run-wide settings. ``precision: auto`` is bf16 on a GPU and fp32 on the CPU.

    ``clip_weights``: the CLIP the method stands on: a known name or a file; ``null`` means the
    weights the model config names (e.g. ``ViT-B/16``, downloaded on first use); ``random`` asks
    for random weights on purpose (tests). ``init``: a model folder, training checkpoint or
    foreign state dict to start from (weights only, fresh optimiser), loaded through the weights
    door with ``init_allow_missing`` / ``init_ignore`` (``fnmatch`` patterns of keys that may be
    absent from it / that are skipped in it).
    """

    seed: int = 0
    output: str = "runs/train"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    clip_weights: str | None = None
    init: str | None = None
    init_allow_missing: list[str] = field(default_factory=list)
    init_ignore: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)  # modules registering extra methods/pipelines


@dataclass
class OptimConfig:
    """AdamW over the trainable parameters, grouped by learning-rate and decay multipliers.

    ``lr_mult`` / ``decay_mult`` map a substring of the parameter name to a multiplier; the longest
    matching key wins (GKC: ``{backbone: 0.1}``). ``no_decay`` lists kinds of parameters without
    weight decay: ``norm`` (normalisation layers), ``embedding`` (``nn.Embedding`` tables), ``bias``,
    ``1d`` (every parameter with < 2 dims), plus any names the model returns from
    ``no_weight_decay()``. TagCLIP decays everything (``no_decay: []``).

    ``skip_nonfinite``: how many optimiser steps with a NaN/inf loss may be skipped (no update,
    the batch is consumed, the step is logged) before training stops; 0 stops at the first one.
    """

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_mult: dict[str, float] = field(default_factory=dict)
    decay_mult: dict[str, float] = field(default_factory=dict)
    no_decay: list[Literal["norm", "embedding", "bias", "1d"]] = field(default_factory=list)
    grad_clip: float | None = None  # max L2 norm of all gradients together
    accumulate: int = 1  # micro-batches per optimiser step
    skip_nonfinite: int = 0  # NaN/inf-loss steps that may be skipped before training stops


@dataclass
class ScheduleConfig:
    """Per-iteration learning-rate factor; lengths in ``iterations`` or ``epochs`` (not both).

    ``poly``: lr = (lr0 - min_lr)(1 - t/T)^power + min_lr (TagCLIP). ``cosine``: half cosine from lr0
    to ``min_lr`` after the warm-up (ZeroSeg). ``step``: lr0 · gamma^(milestones passed) (GKC).
    Warm-up multiplies by ``1 - (1 - t/W)(1 - warmup_ratio)`` for t < W (linear from
    ``warmup_ratio``; for ``cosine`` the warm-up replaces the curve, as in MAE).
    """

    name: Literal["poly", "cosine", "step", "constant"] = "poly"
    iterations: int | None = None
    epochs: float | None = None
    warmup_iters: int = 0
    warmup_epochs: float = 0.0
    warmup_ratio: float = 1e-6
    power: float = 0.9
    min_lr: float = 0.0
    milestones: list[int] = field(default_factory=list)  # iterations
    gamma: float = 0.1


@dataclass
class ZeroShotConfig:
    """Seen/unseen split (ZegCLIP §4.1). ``unseen``: class names or ids of the dataset."""

    setting: Literal["supervised", "inductive", "transductive"] = "supervised"
    unseen: list[str | int] = field(default_factory=list)


@dataclass
class DataConfig:
    """Training data: ``pipeline`` names a builder of :mod:`vocaseg.data.pipelines` (empty: the
    one the method's registry entry names).

    ``batch_size`` is per process and per micro-batch; the global batch is
    ``batch_size × accumulate × world size``. ``transform`` goes to the pipeline's augmentation
    and ``options`` holds pipeline-specific keys (each pipeline documents its own).
    """

    pipeline: str = ""
    dataset: str = ""
    root: str | None = None
    split: str = "train"
    layout: str | None = None
    batch_size: int = 2
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = True
    transform: dict[str, Any] = field(default_factory=dict)
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Periodic evaluation through :func:`vocaseg.engine.evaluator.evaluate` (``every: 0`` = off)."""

    every: int = 0
    dataset: str | None = None  # default: the training dataset
    root: str | None = None
    split: str = "val"
    max_images: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # extra evaluate() keyword arguments


@dataclass
class CheckpointConfig:
    every: int = 1000  # iterations; a final checkpoint is always written
    keep_last: int = 3
    keep: list[int] = field(default_factory=list)  # steps never pruned (e.g. a transductive start)


@dataclass
class LoggingConfig:
    every: int = 20  # iterations between CSV rows
    tensorboard: bool = True  # when the tensorboard package is installed
    progress: bool = True  # tqdm bar


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def method(self) -> str:
        return self.model["name"]

    @property
    def model_options(self) -> dict[str, Any]:
        """The ``model:`` section without ``name``: the method config for ``create_model``."""
        return {k: v for k, v in self.model.items() if k != "name"}


def parse_train_config(
    data: dict[str, Any], overrides: list[str] | None = None, where: str = "config"
) -> TrainConfig:
    """Validate a config mapping (plus ``key.sub=value`` overrides) into a :class:`TrainConfig`.

    The ``model:`` section is checked against the method's own config class, so a typo anywhere
    fails here, before data or weights are touched.
    """
    from vocaseg.models.registry import build_config

    data = apply_overrides(data, overrides or [])
    cfg = from_dict(TrainConfig, data, where)
    if not isinstance(cfg.model.get("name"), str):
        raise ConfigError(f"{where}: model.name is required (e.g. model: {{name: tagclip}})")
    for module in cfg.run.imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"{where}: run.imports: cannot import {module!r} ({err})") from None
    build_config(cfg.method, cfg.model_options)
    _check(cfg, where)
    return cfg


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config and apply ``--set`` overrides."""
    return parse_train_config(load_yaml(path), overrides, where=str(path))


def _check(cfg: TrainConfig, where: str) -> None:
    schedule, optim, data = cfg.schedule, cfg.optim, cfg.data
    if (schedule.iterations is None) == (schedule.epochs is None):
        raise ConfigError(f"{where}: set exactly one of schedule.iterations and schedule.epochs")
    if schedule.warmup_iters and schedule.warmup_epochs:
        raise ConfigError(f"{where}: set at most one of warmup_iters and warmup_epochs")
    positive = {
        "optim.accumulate": optim.accumulate,
        "data.batch_size": data.batch_size,
        "checkpoint.keep_last": cfg.checkpoint.keep_last,
        "checkpoint.every": cfg.checkpoint.every,
        "logging.every": cfg.logging.every,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {value}")
    if optim.skip_nonfinite < 0:
        raise ConfigError(f"{where}: optim.skip_nonfinite must be >= 0, got {optim.skip_nonfinite}")
    if not _DEVICE.match(cfg.run.device):
        raise ConfigError(
            f"{where}: run.device must be auto, cpu, cuda or cuda:N, got {cfg.run.device!r}"
        )
    if optim.lr <= 0:
        raise ConfigError(f"{where}: optim.lr must be > 0, got {optim.lr}")
    if optim.grad_clip is not None and optim.grad_clip <= 0:
        raise ConfigError(f"{where}: optim.grad_clip must be > 0 or null, got {optim.grad_clip}")
