"""``vocaseg bench``: speed and memory of a method through the path ``vocaseg segment`` runs.

Prints a small table (vocabulary encoding cold vs cached, seconds per batch, images/s, peak memory)
and, with ``--json``, writes the full record atomically. The measuring lives in ``vocaseg.bench``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vocaseg.cli.options import (
    add_device_options,
    add_model_options,
    check_output_file,
    resolve_model,
)
from vocaseg.errors import UserError
from vocaseg.io import write_json
from vocaseg.text.vocab import Vocabulary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure speed and memory of a method",
        description="Time vocabulary encoding (cold vs cached) and segmentation of random "
        "images (median and min seconds per batch, images/s, peak memory) with the same "
        "Segmenter that 'vocaseg segment' runs.",
    )
    add_model_options(parser, "--set short_side=512 --set window=0")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (512)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    parser.add_argument(
        "--classes",
        default="20",
        help='a number N (the first N ADE20K-Full names) or names, e.g. "cat, dog" (20)',
    )
    add_device_options(parser)
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first (1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches (3)")
    parser.add_argument("--json", metavar="OUT", help="also write the full record to this file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.bench import format_table, numbered_vocabulary, run_bench
    from vocaseg.inference.segmenter import Segmenter

    for flag, value, least in (
        ("--size", args.size, 1),
        ("--batch-size", args.batch_size, 1),
        ("--warmup", args.warmup, 0),
        ("--repeats", args.repeats, 1),
    ):
        if value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}")
    text = args.classes.strip()
    vocabulary = numbered_vocabulary(int(text)) if text.isdigit() else Vocabulary.parse(text)
    if args.json:
        check_output_file(Path(args.json), "--json")
    segmenter = Segmenter(resolve_model(args), device=args.device, dtype=args.dtype)
    result = run_bench(segmenter, vocabulary, args.size, args.batch_size, args.warmup, args.repeats)
    result["model"] = str(args.model)
    result["weights"] = None if args.weights is None else str(args.weights)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
