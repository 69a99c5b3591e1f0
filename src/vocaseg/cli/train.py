"""``vocaseg train CONFIG.yaml [--set key.sub=value ...] [--output DIR] [--resume auto|PATH]
[--allow-config-change] [--print-model]``: train any method with the engine of
:mod:`vocaseg.engine.trainer`.

The same command runs under ``torchrun --nproc-per-node N -m vocaseg train ...`` for DDP.
The config (plus overrides) is validated completely before any data or weights are read.
Ctrl-C (SIGINT) or SIGTERM saves a checkpoint of the step just completed and exits with
128 + the signal number (130 for Ctrl-C) and one line saying how to continue.
"""

from __future__ import annotations

import argparse
import sys


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
        help="'auto': continue from the newest checkpoint in the run folder (start from scratch "
        "when there is none); or a checkpoint file. The config must be the one the checkpoint "
        "was trained with (output, device, data.root, data.num_workers, eval.*, checkpoint.*, "
        "logging.* and optim.skip_nonfinite may change)",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume even though the config changed since the checkpoint (the changes are "
        "recorded in the run folder's config_changes.jsonl)",
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
    from vocaseg.engine.interrupt import TrainingInterrupted
    from vocaseg.engine.trainer import Trainer

    trainer = None
    try:
        trainer = Trainer(
            cfg,
            output=args.output,
            resume=args.resume,
            allow_config_change=args.allow_config_change,
        )
        final = trainer.train()
        if trainer.dist.is_main:
            print(f"final model: {final}")
    except TrainingInterrupted as stop:
        if trainer is None or trainer.dist.is_main:
            sys.stderr.write(f"{stop}\n")
        return stop.exit_code
    except WeightsNotFoundError as err:
        hint = "set run.clip_weights in the config (or --set run.clip_weights=PATH)"
        raise WeightsNotFoundError(str(err).replace(LOCAL_WEIGHTS_HINT, hint)) from None
    finally:
        del trainer  # the DDP wrapper goes before its process group
        shutdown_distributed()
    return 0
