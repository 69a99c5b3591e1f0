"""``vocaseg zeroseg cache-teacher IMAGES_DIR -o CACHE``: pre-compute ZeroSeg's multi-scale teacher
targets (Chen et al., ICCV 2023, §3.3 and §4.1) once, before training.

The teacher is the CLIP image tower of ``--weights`` (default: the config's CLIP, ViT-L/14). The
views and the student crop come from a training config (``--config``: its ``model:`` section and
``data.options``) or ZeroSeg's defaults, each changeable by a flag; training refuses a cache built
otherwise, in one line. Under ``torchrun --nproc-per-node N -m vocaseg zeroseg cache-teacher ...``
every process embeds its share of the shards; an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "zeroseg",
        help="ZeroSeg tools: pre-compute the teacher targets",
        description="Tools for ZeroSeg (CLIP image-encoder distillation on unlabelled images).",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", parser_class=type(parser))
    cache = actions.add_parser(
        "cache-teacher",
        help="embed the 30 multi-scale views of every image with the CLIP teacher",
        description="Embed the multi-scale views of every image under IMAGES_DIR (recursive) with "
        "a frozen CLIP image tower into sharded float16 files that training memory-maps. "
        "Resumable; shards split over torchrun processes.",
    )
    cache.add_argument("images", metavar="IMAGES_DIR", help="folder of images (read recursively)")
    cache.add_argument("-o", "--output", required=True, help="cache folder to write (or resume)")
    cache.add_argument(
        "--weights",
        help="the teacher's CLIP weights: a known name (ViT-L/14), a checkpoint file, or 'random' "
        "(tests); default: run.clip_weights of --config, else the config's CLIP (ViT-L/14)",
    )
    cache.add_argument(
        "--config", help="training config whose model settings and data.options to match"
    )
    cache.add_argument("--size", type=int, help="student crop size in pixels (model.img_size)")
    cache.add_argument("--crop-pct", type=float, help="data.options.crop_pct")
    cache.add_argument(
        "--crop-source", choices=["student", "native"], help="model.teacher_crop_source"
    )
    cache.add_argument("--grids", type=int, nargs="+", help="model.teacher_grids, e.g. 1 2 3 4")
    cache.add_argument("--shard-size", type=int, help="images per shard (default 1024)")
    cache.add_argument("--batch-size", type=int, help="images per teacher pass (default 64)")
    cache.add_argument("--workers", type=int, default=4, help="image decoding processes")
    cache.add_argument("--device", default="auto", help="auto, cpu or cuda")
    cache.add_argument("--seed", type=int, help="seed for --weights random (default run.seed)")
    cache.set_defaults(run=run_cache_teacher)


def _settings(args: argparse.Namespace) -> tuple[Any, Any, str | None, int]:
    """(ZeroSegConfig, ImageFolderOptions, weights, seed) from --config and the flags."""
    from vocaseg.config import from_dict
    from vocaseg.data.distillation import ImageFolderOptions
    from vocaseg.engine.train_config import load_train_config
    from vocaseg.models.registry import build_config

    model: dict[str, Any] = {}
    options: dict[str, Any] = {}
    weights, seed = None, 0
    if args.config:
        cfg = load_train_config(args.config)
        model, options = cfg.model_options, dict(cfg.data.options)
        weights, seed = cfg.run.clip_weights, cfg.run.seed
    flags = {"img_size": args.size, "teacher_crop_source": args.crop_source}
    flags["teacher_grids"] = args.grids
    model.update({k: v for k, v in flags.items() if v is not None})
    data = {
        "crop_pct": args.crop_pct,
        "shard_size": args.shard_size,
        "cache_batch_size": args.batch_size,
    }
    options.update({k: v for k, v in data.items() if v is not None})
    config = build_config("zeroseg", model)
    return (
        config,
        from_dict(ImageFolderOptions, options, "data.options"),
        args.weights or weights,
        seed if args.seed is None else args.seed,
    )


def run_cache_teacher(args: argparse.Namespace) -> int:
    import torch

    from vocaseg.data.distillation import build_cache_on_all_processes
    from vocaseg.data.image_folder import ImageFolderSource
    from vocaseg.engine.distributed import init_distributed, shutdown_distributed
    from vocaseg.models.towers import load_clip, resolve_weights, strip_towers
    from vocaseg.models.zeroseg import multiscale_teacher, teacher_views

    config, options, weights, seed = _settings(args)
    images = ImageFolderSource(args.images, size=config.img_size, crop_pct=options.crop_pct)
    dist, device = init_distributed(args.device)
    try:
        torch.manual_seed(seed)  # random weights equal those of a training run with this seed
        pretrained = True if weights is None else weights
        clip, source = load_clip(resolve_weights(pretrained, config.clip), config.clip)
        views = teacher_views(config, clip.config)
        visual = strip_towers(clip, {"visual"}).visual.to(device).eval().requires_grad_(False)
        teacher = multiscale_teacher(visual, views, source.weights)
        report = build_cache_on_all_processes(
            Path(args.output),
            images,
            teacher,
            dist=dist,
            device=device,
            shard_size=options.shard_size,
            batch_size=options.cache_batch_size,
            num_workers=args.workers,
            progress=True,
        )
        if dist.is_main:
            print(report.summary())
    finally:
        shutdown_distributed()
    return 0
