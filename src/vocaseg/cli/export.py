"""``vocaseg export``: a deployable ONNX graph of a method's image path, with its text embeddings.

Writes ``OUT.onnx`` (normalised images and text embeddings in, dense logits out), ``OUT.text.npy``
(the vocabulary's embeddings) and ``OUT.json`` (preprocess, classes, what the caller still does).
The exporting lives in ``vocaseg.export``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vocaseg.cli.options import (
    add_model_options,
    add_vocabulary_options,
    check_output_file,
    read_vocabulary,
    resolve_model,
)
from vocaseg.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a method's image path to ONNX",
        description="Export a method to ONNX: normalised images [B, 3, H, W] and text embeddings "
        "[Q, D] in, dense logits out (batch dynamic; H, W and Q fixed). Also writes "
        "OUT.text.npy (the vocabulary's embeddings) and OUT.json (preprocess and classes).",
    )
    add_model_options(parser, "--set templates=imagenet80")
    add_vocabulary_options(parser)
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="output format (onnx)")
    parser.add_argument("-o", "--output", required=True, help="output file, e.g. model.onnx")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size, multiples of the patch size (default: the model's window)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (17)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.export import export_onnx, require_onnx, sidecar_paths

    require_onnx()
    if args.opset < 14:
        raise UserError(f"--opset {args.opset} is too old; use 14 or newer (default 17)")
    vocabulary = read_vocabulary(args)
    output = Path(args.output)
    check_output_file(output, "-o/--output")
    model = resolve_model(args)
    record = export_onnx(
        model, vocabulary, output, tuple(args.size) if args.size else None, args.opset
    )
    json_path, text_path = sidecar_paths(output)
    height, width = record["input_size"]
    print(
        f"exported {record['method']} at {height}x{width} for {len(vocabulary)} classes to "
        f"{output} (+ {json_path.name}, {text_path.name})"
    )
    return 0
