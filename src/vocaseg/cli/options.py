"""Command-line options shared by the commands that build a model (``segment``, ``eval``,
``bench``, ``export``, ``demo``): model, weights, ``--set``, ``--background``, vocabulary, device
and precision, the pixel limit of the image readers, unknown label values as ignore, one model resolver for all of them, and the
early check that an output location can be written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vocaseg.config import parse_override
from vocaseg.errors import UserError
from vocaseg.io import check_writable_folder
from vocaseg.text.vocab import Vocabulary

WEIGHTS_HELP = (
    "a model folder (trained or converted), CLIP weights (a known name such as ViT-B/16, or a "
    "checkpoint file), or 'random' (tests); default: the model's own weights"
)


def add_model_options(
    parser: argparse.ArgumentParser, set_example: str, default: str | None = "maskclip"
) -> None:
    """``--model``, ``--weights``, repeatable ``--set KEY=VALUE`` and ``--background``."""
    parser.add_argument(
        "--model",
        default=default,
        required=default is None,
        help="method name (see 'vocaseg models') or model folder"
        + (f" (default {default})" if default else ""),
    )
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"change a model setting, e.g. {set_example} (keys: 'vocaseg models NAME')",
    )
    parser.add_argument(
        "--background",
        metavar="ID[,key=value...]",
        help="background protocol: bg:none, bg:threshold, bg:groupvit, bg:prompt or "
        "bg:catseg-20b, with options, e.g. bg:threshold,prob_thd=0.3 (pixels below it become "
        "'background')",
    )


def add_vocabulary_options(parser: argparse.ArgumentParser) -> None:
    """``--classes "a, b; c"`` or ``--classes-file F`` (one of them required)."""
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names, e.g. "cat, sofa; couch, floor"')
    vocab.add_argument(
        "--classes-file",
        help="a UTF-8 text file with one class per line ('; ' between synonyms); blank lines and "
        "lines starting with # are skipped",
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="precision"
    )


def add_max_pixels_option(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels N``: the largest image the readers open (:func:`apply_max_pixels`)."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="largest image (width x height) to read; a larger one is an unreadable image, a "
        "guard against decompression bombs (default PIL's limit, 178956970)",
    )


def add_unknown_as_ignore_option(parser: argparse.ArgumentParser) -> None:
    """``--unknown-as-ignore``: label values with no class in the dataset are ignored, not errors."""
    parser.add_argument(
        "--unknown-as-ignore",
        action="store_true",
        help="read label values that name no class of the dataset as 'ignore' instead of "
        "stopping (recorded in the results)",
    )


def apply_max_pixels(args: argparse.Namespace) -> None:
    """Set the readers' pixel limit from ``--max-pixels`` (process-wide; unchanged without it)."""
    from vocaseg.data.imageio import set_max_pixels

    if args.max_pixels is not None:
        set_max_pixels(args.max_pixels)


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` values (and ``--background``) as keyword overrides of the model config."""
    from vocaseg.background import parse_background

    settings = {}
    for text in args.set:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise UserError(f"--set {text}: model settings are flat; use e.g. --set short_side=448")
        settings[keys[0]] = value
    if getattr(args, "background", None):
        settings.update(parse_background(args.background))
    return settings


def resolve_model(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    """The model the options name, through the one resolver (:mod:`vocaseg.models.resolve`)."""
    from vocaseg.models.resolve import resolve_model as resolve

    return resolve(args.model, args.weights, {**(extra or {}), **model_settings(args)})


def read_vocabulary(args: argparse.Namespace) -> Vocabulary:
    """The vocabulary named by ``--classes`` or ``--classes-file``."""
    if args.classes_file:
        return Vocabulary.from_file(args.classes_file)
    return Vocabulary.parse(args.classes)


def check_writable(folder: Path, flag: str) -> None:
    """Fail early, before minutes of work, when files cannot be written into ``folder``."""
    check_writable_folder(folder, flag, "output folder", f"pick another with {flag}")


def check_output_file(path: Path, flag: str) -> None:
    """An output *file* path: not a folder, and its folder writable."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; name a file inside it, e.g. {path / 'out'}")
    check_writable(path.parent, flag)
