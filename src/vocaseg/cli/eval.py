"""``vocaseg eval``: score a method on a benchmark under a named protocol (docs/protocols.md) and
write metrics.json, per_class.csv and confusion.npz.

    vocaseg eval --model tagclip --weights runs/tagclip_voc/final --dataset voc20 --data-root data/

``--model`` and ``--weights`` mean what they mean in every command (:mod:`vocaseg.models.resolve`):
without weights a training-free method loads its own CLIP weights (or stops, offline, with one
line), a trained method needs its model folder. ``--set`` changes any model setting. The
protocol picks the headline metric semantics and whether seen/unseen/hIoU are reported; both
semantics are always computed. Runs under ``torchrun`` too: samples are sharded, rank 0 writes.
Video datasets (vspw, vipseg; protocol ``ov-video``, their default) also report VC8/VC16, shard
whole videos, and ``--limit`` counts videos.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vocaseg.cli.options import add_device_options, add_model_options, check_writable
from vocaseg.engine.video_eval import VC_GT_MODES
from vocaseg.errors import UserError

# Protocol -> headline semantics; zs-split also reports seen/unseen/hIoU.
PROTOCOL_SEMANTICS = {
    "ov-cross": "detectron2",
    "ov-video": "detectron2",
    "training-free": "mmseg",
    "zs-split": "mmseg",
}
RESULT_FILES = ("metrics.json", "per_class.csv", "confusion.npz")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a method on a dataset (mIoU, seen/unseen/hIoU, per-class CSV)",
        description="Evaluate a method on a benchmark; writes metrics.json, per_class.csv and "
        "confusion.npz with every setting that moves the numbers.",
    )
    add_model_options(parser, "--set short_side=448 --set window=0", default=None)
    parser.add_argument(
        "--dataset", required=True, help="dataset id (e.g. voc20, ade150) or 'folder'"
    )
    parser.add_argument(
        "--data-root", help="folder holding the dataset (default: search the usual roots)"
    )
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOL_SEMANTICS),
        help="benchmark protocol (default: ov-video for video datasets, zs-split for a model "
        "trained on a seen/unseen split of this dataset, else ov-cross)",
    )
    parser.add_argument(
        "--semantics",
        choices=["both", "detectron2", "mmseg"],
        default="both",
        help="metric semantics to report (default both; the protocol picks the headline)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="evaluate only the first N samples (for video datasets: the first N whole videos)",
    )
    parser.add_argument(
        "--vc-gt",
        choices=VC_GT_MODES,
        default="raw",
        help="video consistency compares raw label values as VSPW's VC_perclip.py (raw, default) "
        "or decoded trainIds (mapped)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    add_device_options(parser)
    parser.add_argument(
        "-o", "--output", help="output folder (default: eval/<dataset>-<model>, never reused)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the results in an existing --output"
    )
    parser.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="an unreadable sample stops the run (default) or is skipped and counted",
    )
    parser.add_argument(
        "--save-vis", type=int, metavar="N", help="save overlays of the first N images"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def semantics_order(protocol: str, choice: str) -> tuple[str, ...]:
    """Semantics to report, headline first."""
    if choice != "both":
        return (choice,)
    headline = PROTOCOL_SEMANTICS[protocol]
    return (headline, "mmseg" if headline == "detectron2" else "detectron2")


def output_folder(args: argparse.Namespace) -> Path:
    """``-o`` (refused if it holds results, unless ``--overwrite``) or a fresh default name."""
    if args.output:
        out = Path(args.output)
        if not args.overwrite and any((out / name).exists() for name in RESULT_FILES):
            raise UserError(
                f"{out} already holds evaluation results; pass --overwrite to replace them or "
                "choose another -o/--output"
            )
        return out
    model = Path(args.model)
    slug = (
        f"{model.parent.name}-{model.name}" if model.is_dir() and model.parent.name else model.name
    )
    base = Path("eval") / f"{args.dataset}-{slug}"
    out, n = base, 1
    while out.exists() and any((out / name).exists() for name in RESULT_FILES):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def trained_split(model: Any, dataset: Any) -> dict[str, Any] | None:
    """The zero-shot split ``model`` was trained with on this benchmark (same class list), if any."""
    trained = model.training_record or {}
    split = trained.get("split") or {}
    same = (trained.get("dataset") or {}).get("class_list") == dataset.record.get("class_list")
    if same and split.get("setting") in ("inductive", "transductive"):
        return split
    return None


def pick_protocol(
    args: argparse.Namespace, dataset: Any, model: Any
) -> tuple[str, tuple[int, ...] | None]:
    """The protocol and its seen class ids (None: no seen set, as cross-dataset evaluation)."""
    is_video = getattr(dataset, "videos", None) is not None
    split = trained_split(model, dataset)
    default = "ov-video" if is_video else ("zs-split" if split else "ov-cross")
    protocol = args.protocol or default
    if protocol == "ov-video" and not is_video:
        raise UserError(
            f"--protocol ov-video needs a video dataset (vspw, vipseg), not {args.dataset!r}"
        )
    if protocol == "zs-split":
        if split is not None:
            names = [n.lower() for n in dataset.class_names]
            return protocol, tuple(names.index(n.lower()) for n in split["seen"])
        if dataset.seen is None:
            raise UserError(
                f"dataset {args.dataset!r} has no seen/unseen split; use --protocol ov-cross "
                "or a dataset with a zs-split (voc20, coco_stuff, pc59)"
            )
        return protocol, dataset.seen
    return protocol, dataset.seen if protocol == "ov-video" else None


def run(args: argparse.Namespace) -> int:
    from vocaseg.cli.options import resolve_model
    from vocaseg.data import load_dataset
    from vocaseg.device import autocast, resolve_dtype
    from vocaseg.engine.distributed import init_distributed, shutdown_distributed
    from vocaseg.engine.evaluator import evaluate, format_summary, write_results
    from vocaseg.text.vocab import Vocabulary

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    out = output_folder(args)
    created = not out.exists()
    info, device = init_distributed(args.device)
    try:
        if info.is_main:
            check_writable(out, "-o/--output")
        dataset = load_dataset(args.dataset, root=args.data_root, split=args.split)
        model = resolve_model(args).to(device)
        protocol, seen = pick_protocol(args, dataset, model)
        # The model sees a seen set only under the zero-shot split (cross-dataset: none).
        vocabulary = Vocabulary(dataset.classes.classes, seen if protocol == "zs-split" else None)
        with autocast(device, resolve_dtype(args.dtype)):
            result = evaluate(
                model,
                dataset,
                vocabulary,
                device=device,
                limit=args.limit,
                batch_size=args.batch_size,
                semantics=semantics_order(protocol, args.semantics),
                seen=seen,
                on_error=args.on_error,
                progress=not args.no_progress,
                save_vis=args.save_vis,
                vc_gt=args.vc_gt,
            )
        result.record.update(
            {
                "protocol": protocol,
                "model_source": args.model,
                "weights_source": args.weights,
                "overrides": list(args.set),
                "dtype": args.dtype,
            }
        )
        if info.is_main:
            print(format_summary(result), end="")
            try:
                write_results(result, out)
            except OSError as err:
                raise UserError(
                    f"the results above could not be written to {out} "
                    f"({err.strerror or type(err).__name__}); free space or pick another -o"
                ) from None
            print(f"results: {out}")
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # checked writable up front; leave no empty folder behind a failed run
        raise
    finally:
        shutdown_distributed()
    return 0
