"""``vocaseg convert FORMAT SOURCE -o OUT``: turn a checkpoint into a vocaseg model folder.

- ``zegclip``: a released ZegCLIP checkpoint (or one trained with the official TagCLIP code),
  :mod:`vocaseg.models.convert_zegclip`; ``--clip`` names the CLIP for the text tower.
- ``gkc``: a checkpoint in the released GKC layout (:mod:`vocaseg.models.convert_gkc`);
  ``--clip`` names the CLIP whose text tower the checkpoint's ``text_encoder`` must equal.
- ``model-folder``: re-write a model folder, e.g. ``--self-contained`` for offline deployment
  (the frozen CLIP tensors copied in, so no reference needs to resolve where it runs).

An existing model folder at ``-o`` is refused unless ``--overwrite``; an ``-o`` that cannot be
written is refused before the checkpoint is read. Errors are one line: a checkpoint that needs
``--allow-pickle`` names the Python object it holds, a ResNet ``--clip`` says that the checkpoint
needs a ViT, and a checkpoint whose CLIP is not the default ViT-B/16 gets the hint to pass
``--clip``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

FORMATS = ("zegclip", "gkc", "model-folder")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a released checkpoint of another code base into a vocaseg model folder",
        description="Convert an official ZegCLIP/TagCLIP checkpoint (mmcv .pth) or a checkpoint "
        "in the released GKC layout (detectron2 .pth) into a model folder for 'vocaseg eval', "
        "'vocaseg segment' and warm starts.",
    )
    parser.add_argument("format", choices=FORMATS, help="what the source is")
    parser.add_argument("checkpoint", help="the released .pth file, or a model folder")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument(
        "--self-contained",
        action="store_true",
        help="store the frozen CLIP tensors too (offline deployment; larger folder)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing model folder at -o"
    )
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

    overrides = dict((".".join(keys), value) for keys, value in map(parse_override, args.overrides))
    _refuse_existing(args)
    with _one_line_errors(args):
        if args.format == "model-folder":
            return _refolder(args, overrides)
        if args.format == "gkc":
            return _gkc(args, overrides)
        return _zegclip(args, overrides)


def _zegclip(args: argparse.Namespace, overrides: dict) -> int:
    from vocaseg.models.convert_zegclip import convert_checkpoint

    _, report = convert_checkpoint(
        args.checkpoint,
        args.output,
        clip=args.clip,
        allow_pickle=args.allow_pickle,
        overwrite=args.overwrite,
        self_contained=args.self_contained,
        **overrides,
    )
    print(f"method: {report.method}  config: {report.config}")
    inferred = {
        k: report.config[k]
        for k in ("templates", "setting", "trusty_weighting")
        if k in report.config
    }
    if inferred:
        print(
            "inferred from the checkpoint's stored config: "
            + ", ".join(f"{k}={v}" for k, v in inferred.items())
        )
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


def _gkc(args: argparse.Namespace, overrides: dict) -> int:
    from vocaseg.models.convert_gkc import convert_checkpoint

    _, report = convert_checkpoint(
        args.checkpoint,
        args.output,
        clip_weights=args.clip,
        allow_pickle=args.allow_pickle,
        overwrite=args.overwrite,
        self_contained=args.self_contained,
        **overrides,
    )
    print(f"method: gkc  config: {report.config}")
    print(f"text tower: {report.text_tower}")
    print(f"dropped {len(report.dropped)} tensors (teacher, buffers, unused heads)")
    if report.unfilled:
        print(
            f"left at their initial values ({len(report.unfilled)}, training-only): "
            + ", ".join(report.unfilled[:8])
        )
    print(f"wrote {args.output}")
    return 0


def _refuse_existing(args: argparse.Namespace) -> None:
    """Before any work: an existing model folder at -o is kept unless --overwrite, and -o must be
    a folder that can be written."""
    from pathlib import Path

    from vocaseg.cli.options import check_writable
    from vocaseg.errors import UserError
    from vocaseg.models.weights import MODEL_JSON

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserError(f"-o {output} is a file; name a folder for the model")
    if (output / MODEL_JSON).exists() and not args.overwrite:
        raise UserError(
            f"{args.output} already holds a model; pass --overwrite to replace it or choose "
            "another -o"
        )
    check_writable(output.parent, "-o")


@contextmanager
def _one_line_errors(args: argparse.Namespace) -> Iterator[None]:
    """Errors of the converters, reworded where the command line knows more (see the module
    docstring)."""
    from vocaseg.errors import UserError

    try:
        yield
    except UserError as err:
        text = str(err)
        if args.clip and "a ResNet" in text:
            text = (
                f"--clip {args.clip} is a ResNet CLIP, but a {args.format} checkpoint stands on a "
                "CLIP ViT; pass the ViT CLIP it was trained with (e.g. --clip ViT-B/16)"
            )
        elif not args.clip and "wrong shape" in text and "clip." in text:
            text += (
                "; the checkpoint's CLIP is not the default ViT-B/16: pass the CLIP it was "
                "trained with, e.g. --clip ViT-L/14 or --clip FILE"
            )
        else:
            raise
        raise type(err)(text) from None


def _refolder(args: argparse.Namespace, overrides: dict) -> int:
    from vocaseg.models.folder import load_model, save_model

    model = load_model(args.checkpoint, clip_weights=args.clip, **overrides)
    save_model(model, args.output, self_contained=args.self_contained, overwrite=args.overwrite)
    kind = "self-contained" if args.self_contained else "referring to its CLIP weights"
    print(f"wrote {args.output} ({kind})")
    return 0
