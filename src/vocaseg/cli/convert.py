"""``vocaseg convert zegclip CKPT -o OUT [--clip NAME_OR_FILE] [--set key=value ...]``: turn a
released ZegCLIP checkpoint (or one trained with the official TagCLIP code) into a vocaseg model
folder (:mod:`vocaseg.models.convert_zegclip`, specs/tagclip.md §8)."""

from __future__ import annotations

import argparse

FORMATS = ("zegclip",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a released checkpoint of another code base into a vocaseg model folder",
        description="Convert an official ZegCLIP/TagCLIP checkpoint (mmcv .pth) into a model "
        "folder for 'vocaseg eval', 'vocaseg segment' and warm starts.",
    )
    parser.add_argument("format", choices=FORMATS, help="what the checkpoint is")
    parser.add_argument("checkpoint", help="the released .pth file")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument(
        "--clip",
        help="CLIP for the text tower and the frozen-weight check: a known name (ViT-B/16) or a "
        "file; default: random text tower (listed as unfilled)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a model config value, e.g. --set setting=transductive (repeatable)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow full unpickling of the checkpoint (only for files you trust)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.config import parse_override
    from vocaseg.models.convert_zegclip import convert_checkpoint

    overrides = dict((".".join(keys), value) for keys, value in map(parse_override, args.overrides))
    _, report = convert_checkpoint(
        args.checkpoint, args.output, clip=args.clip, allow_pickle=args.allow_pickle, **overrides
    )
    print(f"method: {report.method}  config: {report.config}")
    if report.num_train_classes is not None:
        print(f"trained on {report.num_train_classes} classes")
    print(f"dropped {len(report.dropped)} tensors (text tower, loss buffers, unused attention)")
    if report.unfilled:
        print("left at their initial values: " + ", ".join(report.unfilled))
    if report.frozen_mismatches:
        print(
            f"warning: {len(report.frozen_mismatches)} frozen tensors differ from --clip: "
            + ", ".join(report.frozen_mismatches[:8])
        )
    print(f"wrote {args.output}")
    return 0
