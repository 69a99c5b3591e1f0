"""Entry point of the ``vocaseg`` command: parses arguments and dispatches to one module per command.

Each command lives in its own module under ``vocaseg.cli`` and exposes ``register(subparsers)``,
which adds its parser and sets ``run=`` to a function taking the parsed arguments and returning an
exit code. User mistakes raise :class:`vocaseg.errors.UserError` and end here as one line,
``error: ...``, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from typing import TextIO

from vocaseg import __version__
from vocaseg.cli.streams import pipe_safe_streams
from vocaseg.errors import UserError

# Command modules, in the order ``vocaseg --help`` lists them.
COMMAND_MODULES = [
    "segment", "train", "eval", "models", "datasets", "convert", "bench", "export", "demo",
    "gkc", "zeroseg",
]  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (``error: ...``) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vocaseg",
        description="Open-vocabulary semantic segmentation: name classes in plain text, "
        "get a per-pixel segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"vocaseg {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"vocaseg.cli.{module_name}").register(subparsers)
    return parser


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings meant for users as one plain line, without source paths."""
    stream = file or sys.stderr
    with contextlib.suppress(OSError, ValueError):  # a closed stream
        stream.write(f"warning: {str(message).strip()}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        with pipe_safe_streams():  # a reader that goes away (| head) neither stops nor tracebacks
            return int(args.run(args) or 0)
    except UserError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
