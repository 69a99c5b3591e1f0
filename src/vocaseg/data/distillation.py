"""The ``image_folder`` training pipeline: unlabelled images plus multi-scale teacher targets, for
label-free distillation (ZeroSeg, Chen et al., ICCV 2023, §3.3 and §4.1).

Samples come from :class:`~vocaseg.data.image_folder.ImageFolderSource` (any folder of images,
recursive; unreadable ones skipped with a ``skipped`` count). The teacher targets [V, D] come
either from a pre-computed cache (``cache`` mode: ``targets`` in every sample, memory-mapped
float16 read as float32) or from the teacher inside the training step (``online`` mode: the
sample carries ``teacher_image``, the uint8 crop the views are cut from).

The model says how (:class:`TeacherSetup`, from ``model.teacher_setup()``) and provides the
teacher (``model.multiscale_teacher()``, a :class:`~vocaseg.data.teacher_views.MultiScaleCropTeacher`
identified by its weights' SHA-256). The ``prepare`` stage builds a missing or unfinished cache
before training, each process its share of the shards, and refuses a cache built with another
teacher, view set, student crop or image list in one line.

``data.options`` (all optional except ``cache`` in cache mode):

- ``cache``: the teacher-cache folder (built on first use; ``vocaseg zeroseg cache-teacher``
  builds it ahead of time);
- ``crop_pct`` (1.0): the shorter side is resized to floor(size / crop_pct) before the centre crop;
- ``shard_size`` (1024), ``cache_batch_size`` (64), ``cache_workers`` (default
  ``data.num_workers``): how the cache is built;
- ``synthetic_images`` (0): when > 0 and ``data.root`` holds no images, ``prepare`` first writes
  that many generated images there (:func:`vocaseg.data.synthetic.make_image_folder`; the
  quickstart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

from vocaseg import dist as D
from vocaseg.config import from_dict
from vocaseg.data.batch import TrainSpec
from vocaseg.data.image_folder import ImageFolderSource, list_images, paths_sha256
from vocaseg.data.pipelines import PipelineContext, TrainData, register_pipeline
from vocaseg.data.teacher_cache import (
    CacheBuildReport,
    TeacherCache,
    build_teacher_cache,
    is_complete,
)
from vocaseg.data.teacher_views import MultiScaleCropTeacher, ViewSpec
from vocaseg.dist import DistInfo
from vocaseg.errors import ConfigError

if TYPE_CHECKING:
    from vocaseg.engine.train_config import TrainConfig


@dataclass(frozen=True)
class TeacherSetup:
    """What a distillation student asks of its data: the training crop ``image_size``, where the
    targets come from (``mode``: ``cache`` or ``online``) and the teacher's ``views``."""

    image_size: int
    mode: Literal["cache", "online"]
    views: ViewSpec


class DistillationStudent(Protocol):
    """The model side of this pipeline (``vocaseg.models.zeroseg.ZeroSeg`` implements it)."""

    preprocess: Any

    def teacher_setup(self) -> TeacherSetup: ...

    def multiscale_teacher(self) -> MultiScaleCropTeacher: ...


@dataclass
class ImageFolderOptions:
    """``data.options`` of the ``image_folder`` pipeline (see the module docstring)."""

    cache: str | None = None
    crop_pct: float = 1.0
    shard_size: int = 1024
    cache_batch_size: int = 64
    cache_workers: int | None = None
    synthetic_images: int = 0


def _options(cfg: TrainConfig) -> ImageFolderOptions:
    options = from_dict(ImageFolderOptions, cfg.data.options, "data.options")
    if not 0 < options.crop_pct <= 1:
        raise ConfigError(f"data.options.crop_pct must lie in (0, 1], got {options.crop_pct}")
    if options.shard_size < 1 or options.cache_batch_size < 1:
        raise ConfigError("data.options.shard_size and cache_batch_size must be >= 1")
    return options


def _root(cfg: TrainConfig) -> Path:
    if not cfg.data.root:
        raise ConfigError("data.root is empty; point it at a folder of images (read recursively)")
    return Path(cfg.data.root).expanduser()


def _cache_root(options: ImageFolderOptions) -> Path:
    if not options.cache:
        raise ConfigError(
            "teacher targets come from a cache (teacher_mode: cache) but data.options.cache "
            "names no folder; set it (it is built on first use) or use teacher_mode: online"
        )
    return Path(options.cache).expanduser()


def _images(
    cfg: TrainConfig,
    model: DistillationStudent,
    options: ImageFolderOptions,
    teacher_crop: str | None = None,
) -> ImageFolderSource:
    """The image source with the student's crop and normalisation (0-255 stats -> 0-1)."""
    pre = model.preprocess
    return ImageFolderSource(
        _root(cfg),
        size=model.teacher_setup().image_size,
        crop_pct=options.crop_pct,
        mean=[m / 255 for m in pre.mean],
        std=[s / 255 for s in pre.std],
        teacher_crop=teacher_crop,
    )


def _open_cache(
    root: Path, images: ImageFolderSource, teacher: MultiScaleCropTeacher
) -> TeacherCache:
    """The finished cache at ``root``, refused (one line) unless built for this very setup."""
    cache = TeacherCache(
        root,
        teacher={"name": teacher.name, "sha256": teacher.sha256},
        views=teacher.spec.record(),
        preprocess=images.crop_record(),
    )
    cache.check_images(images.paths)
    return cache


def prepare_image_folder(
    cfg: TrainConfig, model: DistillationStudent, context: PipelineContext
) -> None:
    """Before training: build the teacher cache (cache mode) unless a finished one for this
    setup is there. Every process builds its shards."""
    options = _options(cfg)
    setup = model.teacher_setup()
    if setup.mode != "cache":
        return
    cache_root = _cache_root(options)
    images = _images(cfg, model, options)
    teacher = model.multiscale_teacher()
    if is_complete(cache_root):
        _open_cache(cache_root, images, teacher)  # refuses a cache built otherwise
        return
    report = build_cache_on_all_processes(
        cache_root,
        images,
        teacher,
        dist=context.dist,
        device=context.device,
        shard_size=options.shard_size,
        batch_size=options.cache_batch_size,
        num_workers=cfg.data.num_workers
        if options.cache_workers is None
        else options.cache_workers,
        progress=cfg.logging.progress,
    )
    if context.dist.is_main:
        print(report.summary())


def generate_image_folder(cfg: TrainConfig, context: PipelineContext) -> None:
    """``data.options.synthetic_images``: the main process writes generated images once."""
    options = _options(cfg)
    root = _root(cfg)
    if options.synthetic_images > 0 and context.dist.is_main and not list_images(root):
        from vocaseg.data.synthetic import make_image_folder

        make_image_folder(root, options.synthetic_images, seed=cfg.run.seed)


def build_cache_on_all_processes(
    root: Path,
    images: ImageFolderSource,
    teacher: MultiScaleCropTeacher,
    *,
    dist: DistInfo,
    device: torch.device,
    shard_size: int,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> CacheBuildReport:
    """Every process embeds its share of the shards; after a barrier the main process completes
    the manifest if the last shard was another process's (call it on every process)."""
    options = {"shard_size": shard_size, "batch_size": batch_size, "device": device}
    report = build_teacher_cache(
        root,
        images,
        teacher,
        rank=dist.rank,
        world_size=dist.world_size,
        num_workers=num_workers,
        progress=progress and dist.is_main,
        **options,
    )
    D.barrier()
    if dist.is_main and not report.complete:  # nothing left to embed: writes the manifest
        report.complete = build_teacher_cache(
            root, images, teacher, progress=False, **options
        ).complete
    return report


class DistillationSource:
    """Image samples plus their cached teacher ``targets`` (float32 [V, D]) when ``cache`` is
    given; the cache reader reopens its memory maps lazily in each worker."""

    def __init__(self, images: ImageFolderSource, cache: TeacherCache | None) -> None:
        self.images, self.cache = images, cache

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        out = self.images.sample(index, rng)
        if self.cache is not None:
            out["targets"] = torch.from_numpy(self.cache[out["index"]]).float()
        return out


@register_pipeline("image_folder", prepare=prepare_image_folder, generate=generate_image_folder)
def image_folder_pipeline(
    cfg: TrainConfig, model: DistillationStudent, context: PipelineContext
) -> TrainData:
    """Unlabelled images of ``data.root`` with cached or online multi-scale teacher targets."""
    options = _options(cfg)
    setup = model.teacher_setup()
    online = setup.mode == "online"
    crop_source = setup.views.crop_source
    images = _images(cfg, model, options, teacher_crop=crop_source if online else None)
    cache = None
    if not online:
        cache = _open_cache(_cache_root(options), images, model.multiscale_teacher())
    record = {
        "dataset": "image_folder",
        "root": str(_root(cfg)),
        "images": len(images),
        "images_sha256": paths_sha256(images.paths),
        "teacher_mode": setup.mode,
        "teacher_cache": None if cache is None else str(cache.root),
    }
    # Native-resolution crops differ in size from image to image: keep them as lists.
    list_keys = ("teacher_image",) if online and crop_source == "native" else ()
    return TrainData(
        source=DistillationSource(images, cache),
        spec=TrainSpec(vocabulary=None),
        list_keys=list_keys,
        split={"setting": "label-free"},
        record=record,
    )
