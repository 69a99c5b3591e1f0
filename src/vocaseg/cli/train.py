"""``vocaseg train CONFIG.yaml [--set key.sub=value ...] [--output DIR] [--resume auto|PATH]
[--print-model]``: train any method with the engine of :mod:`vocaseg.engine.trainer`.

The same command runs under ``torchrun --nproc-per-node N -m vocaseg train ...`` for DDP.
The config (plus overrides) is validated completely before any data or weights are read.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a method from a YAML config (single process or torchrun)",
        description="Train a method from a flat YAML config; resumable, multi-GPU via torchrun.",
    )
    parser.add_argument(
        "config", help="training config (YAML), e.g. configs/tagclip_voc_inductive.yaml"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)",
    )
    parser.add_argument("--output", help="run folder (default: run.output of the config)")
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="'auto': continue from the newest checkpoint in the run folder; or a checkpoint file",
    )
    parser.add_argument(
        "--print-model",
        action="store_true",
        help="print the module tree with total and trainable parameter counts, then exit "
        "(random weights, nothing downloaded)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.clip.hub import LOCAL_WEIGHTS_HINT
    from vocaseg.engine.train_config import load_train_config
    from vocaseg.errors import WeightsNotFoundError

    cfg = load_train_config(args.config, args.overrides)
    if args.print_model:
        from vocaseg.engine.trainer import build_model, describe_model

        print(describe_model(build_model(cfg, pretrained=False)))  # random weights: no download
        return 0

    from vocaseg.engine.distributed import shutdown_distributed
    from vocaseg.engine.trainer import Trainer

    try:
        trainer = Trainer(cfg, output=args.output, resume=args.resume)
        final = trainer.train()
        if trainer.dist.is_main:
            print(f"final model: {final}")
        del trainer  # the DDP wrapper goes before its process group
    except WeightsNotFoundError as err:
        hint = "set run.clip_weights in the config (or --set run.clip_weights=PATH)"
        raise WeightsNotFoundError(str(err).replace(LOCAL_WEIGHTS_HINT, hint)) from None
    finally:
        shutdown_distributed()
    return 0
