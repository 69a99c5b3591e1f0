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
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocaseg.cli.options import (
    add_device_options,
    add_max_pixels_option,
    add_model_options,
    add_unknown_as_ignore_option,
    apply_max_pixels,
    check_writable,
)
from vocaseg.config import to_dict
from vocaseg.engine.video_eval import VC_GT_MODES
from vocaseg.errors import UserError
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from vocaseg.data.protocol_table import ProtocolRow

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
    parser.add_argument(
        "--split",
        default="val",
        help="split to evaluate (default: val); val_base / val_novel keep only the seen / unseen "
        "classes of the dataset's zero-shot split in the GT (GKC's VIPSeg benchmark)",
    )
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOL_SEMANTICS),
        help="benchmark protocol (default: ov-video for video datasets, zs-split for a model "
        "trained on a seen/unseen split of this dataset, else ov-cross)",
    )
    parser.add_argument(
        "--print-protocol",
        action="store_true",
        help="print the protocol row resolved for --model and --dataset as JSON and exit "
        "(no weights or data needed)",
    )
    parser.add_argument(
        "--no-protocol-row",
        action="store_true",
        help="use the model's own settings instead of the benchmark's protocol row",
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
        help="video consistency compares raw label values as VSPW's VC_perclip.py (raw, VSPW's "
        "default) or class maps (mapped, VIPSeg's default: its raw values are panoptic ids)",
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
    add_unknown_as_ignore_option(parser)
    parser.add_argument(
        "--save-vis", type=int, metavar="N", help="save overlays of the first N images"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_max_pixels_option(parser)
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


@dataclass
class Plan:
    """What an evaluation runs: the method, the protocol row (None: the model's own settings),
    the model settings it implies (``--set`` on top), the class list and the seen class names."""

    method: str
    row: ProtocolRow | None
    settings: dict[str, Any]
    overrides: dict[str, Any]
    class_list: str | None
    seen_names: list[str] | None
    protocol: str
    training: dict[str, Any] | None


def _folder_record(args: argparse.Namespace) -> dict[str, Any] | None:
    from vocaseg.models.resolve import is_model_folder
    from vocaseg.models.weights import read_model_record

    for candidate in (args.model, args.weights):
        if candidate is not None and is_model_folder(candidate):
            return read_model_record(candidate)
    return None


def plan_evaluation(args: argparse.Namespace) -> Plan:
    """Resolve the protocol row for the model and dataset, without weights or data."""
    from vocaseg.cli.options import model_settings
    from vocaseg.data.classlists import seen_ids
    from vocaseg.data.layouts import SPECS
    from vocaseg.data.protocol_table import find_row
    from vocaseg.models.registry import build_config

    record = _folder_record(args)
    method = record["method"] if record else str(args.model)
    config = build_config(method, (record or {}).get("config"))
    training = (record or {}).get("training") or None
    split = (training or {}).get("split") or {}
    trained_on = ((training or {}).get("dataset") or {}).get("class_list")
    spec = SPECS.get(args.dataset)
    benchmark = spec.class_list if spec else args.dataset
    row = None if args.no_protocol_row else find_row(method, benchmark, trained_on)
    overrides = model_settings(args)
    settings = row.settings(set(to_dict(config))) if row else {}
    zero_shot = split.get("setting") in ("inductive", "transductive") and trained_on == benchmark
    if row is not None:
        family = row.protocol
        wants_seen = row.values.get("seen") == "dataset"
    else:
        family = "zs-split" if zero_shot else "ov-cross"
        wants_seen = zero_shot
    if spec is not None and spec.video:
        family, wants_seen = "ov-video", True
    protocol = args.protocol or family
    seen_names = None
    if protocol in ("zs-split", "ov-video") and (wants_seen or args.protocol):
        if zero_shot and split.get("seen"):
            seen_names = list(split["seen"])
        elif spec is not None:
            from vocaseg.data.classlists import load_class_list

            names = load_class_list(spec.class_list).class_names
            ids = seen_ids(spec.class_list, len(names))
            seen_names = [names[i] for i in ids] if ids is not None else None
        if seen_names is None and protocol == "zs-split":
            raise UserError(
                f"dataset {args.dataset!r} has no seen/unseen split; use --protocol ov-cross "
                "or a dataset with a zs-split (voc20, coco_stuff, pc59)"
            )
    if protocol == "ov-video" and not (spec is not None and spec.video):
        raise UserError(
            f"--protocol ov-video needs a video dataset (vspw, vipseg), not {args.dataset!r}"
        )
    class_list = row.class_list if row and row.class_list else (spec.class_list if spec else None)
    return Plan(
        method,
        row,
        {**settings, **overrides},
        overrides,
        class_list,
        seen_names,
        protocol,
        training,
    )


def protocol_json(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    """The resolved record ``--print-protocol`` prints (keys as docs/protocols.md names them)."""
    from vocaseg.data.classlists import load_class_list
    from vocaseg.models.registry import build_config
    from vocaseg.text.templates import get_templates

    record = _folder_record(args)
    config = to_dict(
        build_config(plan.method, {**((record or {}).get("config") or {}), **plan.settings})
    )
    classes = load_class_list(plan.class_list).classes if plan.class_list else None
    templates = config.get("templates")
    return {
        "method": plan.method,
        "dataset": args.dataset,
        "row": plan.row.id if plan.row else None,
        "protocol": plan.protocol,
        **{k: config.get(k) for k in ("short_side", "max_long_side", "window", "stride")},
        # size_divisor 1 pads nothing: the patch grid floors and the logits stretch ("none")
        "pad": "none" if config.get("size_divisor") == 1 else config.get("pad"),
        "size_divisor": None if config.get("size_divisor") == 1 else config.get("size_divisor"),
        "logit_scale": config.get("logit_scale"),
        "prob_thd": config.get("prob_thd"),
        "area_thd": config.get("area_thd"),
        "background": config.get("background"),
        "background_names": config.get("background_names"),
        "class_list": plan.class_list,
        "class_names": ["; ".join(names) for names in classes] if classes else None,
        "templates": list(get_templates(templates)) if templates else None,
        "pamr_steps": config.get("pamr_steps"),
        "seen": plan.seen_names,
        "overrides": plan.overrides,
        "target": plan.row.target if plan.row else None,
        "sources": plan.row.sources if plan.row else {},
    }


def run(args: argparse.Namespace) -> int:
    if args.print_protocol:
        print(json.dumps(protocol_json(plan_evaluation(args), args), indent=2, ensure_ascii=False))
        return 0
    from vocaseg.engine.distributed import init_distributed, shutdown_distributed
    from vocaseg.engine.evaluator import format_summary, write_results

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    apply_max_pixels(args)
    plan = plan_evaluation(args)
    out = output_folder(args)
    created = not out.exists()
    info, device = init_distributed(args.device)
    try:
        if info.is_main:
            check_writable(out, "-o/--output")
        result = _evaluate(args, plan, device)
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


def _evaluate(args: argparse.Namespace, plan: Plan, device: Any) -> Any:
    """Load the data and the model with the plan's settings; run the evaluator."""
    from vocaseg.data import load_class_list, load_dataset
    from vocaseg.device import autocast, resolve_dtype
    from vocaseg.engine.evaluator import evaluate
    from vocaseg.models.resolve import resolve_model

    dataset = load_dataset(
        args.dataset,
        root=args.data_root,
        split=args.split,
        unknown_as_ignore=args.unknown_as_ignore,
    )
    model = resolve_model(args.model, args.weights, plan.settings).to(device)
    names = list(dataset.class_names)
    classes = dataset.classes.classes
    if plan.class_list:
        variant = load_class_list(plan.class_list)
        if len(variant) != len(names):
            raise UserError(
                f"class list {plan.class_list} has {len(variant)} classes but {args.dataset} has "
                f"{len(names)}; the protocol row and the dataset disagree"
            )
        classes = variant.classes
    lowered = [n.lower() for n in names]
    seen = None
    if plan.seen_names is not None:
        seen = tuple(lowered.index(n.lower()) for n in plan.seen_names)
    # The model sees a seen set only under the zero-shot split (cross-dataset: none).
    vocabulary = Vocabulary(
        classes, seen if plan.protocol == "zs-split" else None, allow_shared=True
    )
    with autocast(device, resolve_dtype(args.dtype)):
        result = evaluate(
            model,
            dataset,
            vocabulary,
            device=device,
            limit=args.limit,
            batch_size=args.batch_size,
            semantics=semantics_order(plan.protocol, args.semantics),
            seen=seen,
            on_error=args.on_error,
            progress=not args.no_progress,
            save_vis=args.save_vis,
            vc_gt=args.vc_gt or ("mapped" if args.dataset == "vipseg" else "raw"),
        )
    result.record.update(
        {
            "protocol": plan.protocol,
            "protocol_row": plan.row.record() if plan.row else None,
            "settings": plan.settings,
            "overrides": plan.overrides,
            "model_source": args.model,
            "weights_source": args.weights,
            "dtype": args.dtype,
        }
    )
    return result
