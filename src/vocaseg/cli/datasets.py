"""``vocaseg datasets list | check NAME | prepare NAME``: find, verify and build benchmark data.

``list`` prints every dataset id with its class count and where it is found under the current
roots; ``check`` reads every sample of one dataset and reports problems (unreadable files,
undefined label values, size mismatches; a sample count that differs from the benchmark's is a
warning, an error under ``--strict``); ``prepare`` runs a converter.
"""

from __future__ import annotations

import argparse
import warnings

from tqdm import tqdm

from vocaseg.cli.options import (
    add_max_pixels_option,
    add_unknown_as_ignore_option,
    apply_max_pixels,
)
from vocaseg.data.datasets import CONVERTIBLE, list_datasets
from vocaseg.data.layouts import SPECS
from vocaseg.errors import DatasetError, UserError


def _splits() -> str:
    splits = dict.fromkeys(split for spec in SPECS.values() for split in spec.counts)
    return ", ".join(splits)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="list, check and prepare benchmark datasets",
        description="List the benchmark datasets and where they are found, check one by reading "
        "every sample, or convert an official release into a readable layout.",
    )
    commands = parser.add_subparsers(title="actions", metavar="ACTION", parser_class=type(parser))
    split_help = f"split to read (default val; one of {_splits()}, as the dataset has them)"
    listing = commands.add_parser("list", help="dataset ids, class counts, where they are found")
    listing.add_argument("--data-root", help="dataset root (default: search the usual places)")
    listing.add_argument("--split", default="val", help=split_help)
    listing.set_defaults(run=run_list)
    check = commands.add_parser("check", help="read every sample of a dataset, report problems")
    check.add_argument("name", metavar="NAME", help=f"dataset id: {', '.join(list_datasets())}")
    check.add_argument("--data-root", help="dataset root (default: search the usual places)")
    check.add_argument("--split", default="val", help=split_help)
    check.add_argument("--layout", help="force a layout id (default: probe in table order)")
    check.add_argument(
        "--strict", action="store_true", help="a sample count mismatch is an error (exit 2)"
    )
    add_max_pixels_option(check)
    add_unknown_as_ignore_option(check)
    check.set_defaults(run=run_check)
    prepare = commands.add_parser(
        "prepare",
        help="convert an official release",
        description="Convert an official release into the files the readers take. An archive is "
        "unpacked under DST/.extracted/ for the run and removed afterwards.",
    )
    prepare.add_argument("name", metavar="NAME", help=f"dataset id: {', '.join(CONVERTIBLE)}")
    prepare.add_argument("--src", required=True, help="downloaded archive or its extracted folder")
    prepare.add_argument("--dst", required=True, help="dataset root to write into")
    prepare.add_argument(
        "--from",
        dest="source",
        choices=["json", "mat"],
        help="pc59/pc60 input: json (trainval_merged.json, as MMSegmentation; default) or mat "
        "(trainval.tar.gz)",
    )
    prepare.add_argument(
        "--keep-extracted",
        action="store_true",
        help="keep the unpacked archive in DST/.extracted/ (reused by the next run)",
    )
    prepare.set_defaults(run=run_prepare)
    parser.set_defaults(run=lambda args: parser.print_help() or 0)


def run_list(args: argparse.Namespace) -> int:
    from vocaseg.data.datasets import candidate_roots, find_layout

    print(f"roots searched: {', '.join(str(r) for r in candidate_roots(args.data_root))}")
    width = max(len(name) for name in SPECS)
    for name, spec in SPECS.items():
        try:
            root, layout = find_layout(spec, args.split, args.data_root)
            where = f"found: {root} ({layout.id})"
        except DatasetError:
            where = "not found"
        print(f"  {name:<{width}}  {spec.num_classes:>4} classes  {where}  - {spec.description}")
    print(f"  {'folder':<{width}}     ? classes  your own data: --data-root with classes.txt")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from vocaseg.data import load_dataset

    apply_max_pixels(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(
            args.name, args.data_root, args.split, args.layout, args.strict, args.unknown_as_ignore
        )
    notes = [str(w.message) for w in caught]  # a sample count unlike the benchmark's
    problems = []
    for index in tqdm(range(len(data)), desc=f"checking {args.name}", unit="sample"):
        try:
            data[index]
        except UserError as err:
            problems.append(str(err))
    record = data.record
    print(f"{args.name} {args.split}: {len(data)} samples in {record['root']} "
          f"(layout {record['layout']}, decoder {record['decoder']})")  # fmt: skip
    for note in notes:
        print(f"  warning: {note}")
    for problem in problems:
        print(f"  problem: {problem}")
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


def run_prepare(args: argparse.Namespace) -> int:
    from vocaseg.data.prepare import prepare

    report = prepare(args.name, args.src, args.dst, args.source, args.keep_extracted)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
