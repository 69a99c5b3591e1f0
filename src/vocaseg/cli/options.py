"""Command-line options shared by the commands that build a model for inference
(``segment``, ``bench``, ``export``): model, weights, ``--set``, vocabulary, device and precision,
plus the early check that an output location can be written."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from vocaseg.config import parse_override
from vocaseg.errors import UserError
from vocaseg.text.vocab import Vocabulary


def add_model_options(parser: argparse.ArgumentParser, set_example: str) -> None:
    """``--model``, ``--weights`` and repeatable ``--set KEY=VALUE`` (flat model settings)."""
    parser.add_argument("--model", default="maskclip", help="method or model folder (maskclip)")
    parser.add_argument(
        "--weights",
        help="CLIP weights: a known name (e.g. ViT-B/16) or a checkpoint file; "
        "default: the model's own CLIP, downloaded on first use",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a model setting, e.g. {set_example}",
    )


def add_vocabulary_options(parser: argparse.ArgumentParser) -> None:
    """``--classes "a, b; c"`` or ``--classes-file F`` (one of them required)."""
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names, e.g. "cat, sofa; couch, floor"')
    vocab.add_argument("--classes-file", help="a text file with one class per line")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="precision"
    )


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set`` values as keyword overrides of the model config."""
    overrides = {}
    for text in args.set:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise UserError(f"--set {text}: model settings are flat; use e.g. --set short_side=448")
        overrides[keys[0]] = value
    return overrides


def read_vocabulary(args: argparse.Namespace) -> Vocabulary:
    """The vocabulary named by ``--classes`` or ``--classes-file``."""
    if args.classes_file:
        return Vocabulary.from_file(args.classes_file)
    return Vocabulary.parse(args.classes)


def check_writable(folder: Path, flag: str) -> None:
    """Fail early, before minutes of work, when files cannot be written into ``folder``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"cannot write to output folder {folder} ({reason}); pick another with {flag}"
        ) from None
