"""``vocaseg demo``: load a model once and serve the demo page (``vocaseg.demo``) on this machine.

Binds 127.0.0.1 unless ``--host`` says otherwise; nothing is ever shared publicly. Needs the
``[demo]`` extra (Gradio); without it the command says in one line how to install it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vocaseg.cli.options import (
    add_device_options,
    add_model_options,
    model_settings,
    resolve_model,
)
from vocaseg.errors import UserError

if TYPE_CHECKING:
    from vocaseg.inference.segmenter import Segmenter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="try a model in a local web page (needs vocaseg[demo])",
        description="Load a model once and serve a web page to segment images (and videos, with "
        "PyAV) into the classes you type. Settings that need no reload (background threshold, "
        "sliding window or whole image) are on the page.",
    )
    add_model_options(parser, "--set short_side=448 --set window=0")
    add_device_options(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: your whole network)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (7860)")
    parser.add_argument(
        "--example",
        action="append",
        metavar="IMAGE",
        help="an image to offer on the page, the first one preloaded (repeatable; default: the "
        "bundled photo)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.demo.app import import_gradio

    import_gradio()  # before minutes of model loading: says how to install it if missing
    from vocaseg.demo.app import build_app, launch

    for example in args.example or []:
        if not Path(example).is_file():
            raise UserError(f"example image not found: {example} (check the --example path)")
    segmenter = build_segmenter(args)
    source = {"model": args.model, "weights": args.weights, "settings": model_settings(args)}
    app = build_app(segmenter, examples=args.example, source=source)
    url = launch(app, host=args.host, port=args.port)
    print(f"vocaseg demo: open {url} in a browser (Ctrl+C stops it)", flush=True)
    app.block_thread()
    return 0


def build_segmenter(args: argparse.Namespace) -> Segmenter:
    """The segmenter named by the model options, resolved as every command resolves them."""
    from vocaseg.inference.segmenter import Segmenter

    return Segmenter(resolve_model(args), device=args.device, dtype=args.dtype)
