"""``vocaseg eval``: score a method on a benchmark under a named protocol
(specs/datasets-and-metrics.md §4-§6) and write metrics.json, per_class.csv and confusion.npz.

    vocaseg eval --model tagclip --weights run/ --dataset voc20 --data-root data/

``--model`` is a registered method name or a model folder; ``--weights`` is a model folder written
by ``vocaseg train``/``convert`` (for that method) or CLIP weights (a known name or a file). The
protocol picks the headline metric semantics and whether seen/unseen/hIoU are reported; both
semantics are always computed. Runs under ``torchrun`` too: samples are sharded, rank 0 writes.
Video datasets (vspw, vipseg; protocol ``ov-video``, their default) also report VC8/VC16, shard
whole videos, and ``--limit`` counts videos.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vocaseg.engine.video_eval import VC_GT_MODES
from vocaseg.errors import UserError
from vocaseg.inference.background import PROTOCOLS

# Protocol -> headline semantics (spec §5); zs-split also reports seen/unseen/hIoU.
PROTOCOL_SEMANTICS = {
    "ov-cross": "detectron2",
    "ov-video": "detectron2",
    "training-free": "mmseg",
    "zs-split": "mmseg",
}
ZERO_SHOT_METHODS = ("tagclip", "zegclip")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a method on a dataset (mIoU, seen/unseen/hIoU, per-class CSV)",
        description="Evaluate a method on a benchmark; writes metrics.json, per_class.csv and "
        "confusion.npz with every setting that moves the numbers.",
    )
    parser.add_argument(
        "--model", required=True, help="method name (see 'vocaseg models') or model folder"
    )
    parser.add_argument(
        "--weights", help="model folder of a trained run, or CLIP weights (name or file)"
    )
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
        help="benchmark protocol (default: ov-video for video datasets, zs-split for "
        "tagclip/zegclip, else ov-cross)",
    )
    parser.add_argument(
        "--background",
        metavar="ID[,key=value...]",
        help=f"background protocol: {', '.join(PROTOCOLS)} (e.g. bg:threshold,prob_thd=0.1)",
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--output", help="output folder (default: eval/<dataset>-<model>)")
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


def build_model(name: str, weights: str | None, device: str) -> Any:
    """A model from a method name (+ CLIP weights or a trained model folder) or a model folder."""
    from vocaseg.models.registry import MODEL_JSON, create_model, load_model

    if Path(name).is_dir():
        if weights:
            raise UserError(f"--model {name} is a model folder; drop --weights")
        return load_model(name, device=device)
    if weights and Path(weights).is_dir():
        if not (Path(weights) / MODEL_JSON).is_file():
            raise UserError(
                f"--weights {weights} is a folder without {MODEL_JSON}; pass the model folder "
                "written by 'vocaseg train' (its final model) or a CLIP weights file"
            )
        model = load_model(weights, device=device)
        if model.name != name:
            raise UserError(f"--weights {weights} holds a {model.name!r} model, not {name!r}")
        return model
    return create_model(name, clip_weights=weights).to(device)


def semantics_order(protocol: str, choice: str) -> tuple[str, ...]:
    """Semantics to report, headline first."""
    if choice != "both":
        return (choice,)
    headline = PROTOCOL_SEMANTICS[protocol]
    return (headline, "mmseg" if headline == "detectron2" else "detectron2")


def run(args: argparse.Namespace) -> int:
    from vocaseg.data import load_dataset
    from vocaseg.engine.distributed import init_distributed, shutdown_distributed
    from vocaseg.engine.evaluator import evaluate, format_summary, write_results

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    info, device = init_distributed(args.device)
    try:
        dataset = load_dataset(args.dataset, root=args.data_root, split=args.split)
        model = build_model(args.model, args.weights, str(device))
        is_video = getattr(dataset, "videos", None) is not None
        protocol = args.protocol or ("zs-split" if model.name in ZERO_SHOT_METHODS else "ov-cross")
        if args.protocol is None and is_video:
            protocol = "ov-video"
        if protocol == "ov-video" and not is_video:
            raise UserError(
                f"--protocol ov-video needs a video dataset (vspw, vipseg), not {args.dataset!r}"
            )
        seen = dataset.seen if protocol == "ov-video" else None  # VIPSeg: base/novel split
        if protocol == "zs-split":
            seen = dataset.seen
            if seen is None:
                raise UserError(
                    f"dataset {args.dataset!r} has no seen/unseen split; use --protocol ov-cross "
                    "or a dataset with a zs-split (voc20, coco_stuff)"
                )
        result = evaluate(
            model,
            dataset,
            device=device,
            limit=args.limit,
            batch_size=args.batch_size,
            semantics=semantics_order(protocol, args.semantics),
            seen=seen,
            on_error=args.on_error,
            background=args.background,
            progress=not args.no_progress,
            save_vis=args.save_vis,
            vc_gt=args.vc_gt,
        )
        result.record.update(
            {"protocol": protocol, "model_source": args.model, "weights_source": args.weights}
        )
        if info.is_main:
            out = Path(args.output or Path("eval") / f"{args.dataset}-{Path(args.model).name}")
            write_results(result, out)
            print(format_summary(result), end="")
            print(f"results: {out}")
    finally:
        shutdown_distributed()
    return 0
