"""``vocaseg export``: a deployable ONNX graph of a method's image path, with its text embeddings.

Writes ``OUT.onnx`` (normalised images and text embeddings in, dense logits out), ``OUT.text.npy``
(the vocabulary's embeddings) and ``OUT.json`` (preprocess, classes, what the caller still does).
The exporting lives in ``vocaseg.export``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vocaseg.cli.bench import check_writable
from vocaseg.cli.segment import _override
from vocaseg.errors import UserError
from vocaseg.text.vocab import Vocabulary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a method's image path to ONNX",
        description="Export a method to ONNX: normalised images [B, 3, H, W] and text embeddings "
        "[Q, D] in, dense logits out (batch dynamic; H, W and Q fixed). Also writes "
        "OUT.text.npy (the vocabulary's embeddings) and OUT.json (preprocess and classes).",
    )
    parser.add_argument("--model", default="maskclip", help="method or model folder (maskclip)")
    parser.add_argument(
        "--weights", help="CLIP weights: a known name or a checkpoint file (default: the model's)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model setting, e.g. --set templates=imagenet80",
    )
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names, e.g. "cat, sofa; couch, floor"')
    vocab.add_argument("--classes-file", help="a text file with one class per line")
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
    from vocaseg.inference.segmenter import Segmenter

    require_onnx()
    if args.opset < 14:
        raise UserError(f"--opset {args.opset} is too old; use 14 or newer (default 17)")
    vocabulary = (
        Vocabulary.from_file(args.classes_file)
        if args.classes_file
        else Vocabulary.parse(args.classes)
    )
    overrides = dict(_override(item) for item in args.set)
    output = Path(args.output)
    check_writable(output, "-o/--output")
    model = Segmenter.from_pretrained(args.model, weights=args.weights, **overrides).model
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
