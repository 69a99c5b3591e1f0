"""``vocaseg segment``: segment images or folders into the classes named on the command line.

Writes, per image, ``<stem>_label.png`` (class index per pixel), ``<stem>_overlay.png`` (colours,
boundaries and an area-sorted legend) and ``<stem>.json`` (classes and their pixel fractions), each
atomically. Runs :class:`vocaseg.Segmenter`, so the results equal the Python API's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vocaseg.config import parse_override
from vocaseg.errors import ImageError, UserError, WeightsNotFoundError
from vocaseg.inference.images import find_images, read_image
from vocaseg.io import atomic_path, write_json
from vocaseg.text.vocab import Vocabulary

EPILOG = """\
vocabulary syntax: classes are separated by commas (or lines in --classes-file), synonyms of
one class by semicolons: "cat, sofa; couch, floor" is three classes.

exit status: 0 all images segmented; 1 some images could not be read (the others are written,
a summary line names the failures); 2 a usage error (bad vocabulary, missing weights, unknown
model, unwritable output folder, or no readable image at all).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment images into classes named in plain text",
        description="Segment images (files or folders) into the classes you name. Writes a "
        "label PNG, an overlay with a legend and per-class areas (JSON) for every image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="images or folders")
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", help='class names, e.g. "cat, sofa; couch, floor"')
    vocab.add_argument("--classes-file", help="a text file with one class per line")
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
        help="override a model setting, e.g. --set short_side=448 --set prob_thd=0.2",
    )
    parser.add_argument("-o", "--output", default="vocaseg_out", help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="precision"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight (0.5)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.inference.segmenter import Segmenter
    from vocaseg.viz import label_png, make_palette, overlay

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    vocabulary = (
        Vocabulary.from_file(args.classes_file)
        if args.classes_file
        else Vocabulary.parse(args.classes)
    )
    overrides = dict(_override(text) for text in args.set)
    paths = find_images(args.inputs)
    out_dir = Path(args.output)
    _check_writable(out_dir)
    try:
        segmenter = Segmenter.from_pretrained(
            args.model, weights=args.weights, device=args.device, dtype=args.dtype, **overrides
        )
    except WeightsNotFoundError as err:
        raise WeightsNotFoundError(_weights_hint(str(err), args.weights)) from None
    segmenter.set_vocabulary(vocabulary)
    colours = make_palette(len(vocabulary))
    stems = _unique_stems(paths)
    failures: list[str] = []

    def write(path: Path, image: np.ndarray, result) -> None:
        stem = out_dir / stems[path]
        with atomic_path(stem.with_name(stem.name + "_label.png")) as tmp:
            label_png(result.label, colours).save(tmp, format="PNG")
        picture = overlay(image, result.label, result.class_names, args.alpha, colours)
        with atomic_path(stem.with_name(stem.name + "_overlay.png")) as tmp:
            picture.save(tmp, format="PNG")
        write_json(stem.with_name(stem.name + ".json"), _record(path, result, vocabulary, args))

    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        results = segmenter.predict_arrays([array for _, array in pending])
        for (path, array), result in zip(pending, results):
            write(path, array, result)
        pending.clear()

    for path in tqdm(paths, desc="segment", unit="image", disable=len(paths) < 2):
        try:
            array = np.asarray(read_image(path))
        except ImageError as err:
            failures.append(str(err))  # names the file
            continue
        if pending and (array.shape != pending[0][1].shape or len(pending) >= args.batch_size):
            flush()
        pending.append((path, array))
    if pending:
        flush()
    if failures and len(failures) == len(paths):
        raise ImageError(
            failures[0] if len(paths) == 1 else f"no image could be read: {'; '.join(failures)}"
        )
    written = len(paths) - len(failures)
    if failures:
        sys.stderr.write(
            f"error: {len(failures)} of {len(paths)} images failed, {written} written to "
            f"{out_dir}: {'; '.join(failures)}\n"
        )
        return 1
    print(f"segmented {written} image{'s' * (written != 1)} into {out_dir}")
    return 0


def _override(text: str) -> tuple[str, object]:
    keys, value = parse_override(text)
    if len(keys) != 1:
        raise UserError(f"--set {text}: model settings are flat; use e.g. --set short_side=448")
    return keys[0], value


def _record(path: Path, result, vocabulary: Vocabulary, args: argparse.Namespace) -> dict:
    height, width = result.label.shape
    return {
        "image": str(path),
        "height": height,
        "width": width,
        "model": args.model,
        "weights": args.weights,
        "classes": [
            {"index": i, "name": names[0], "names": list(names), "area": float(area)}
            for i, (names, area) in enumerate(zip(vocabulary.classes, result.areas))
        ],
    }


def _unique_stems(paths: list[Path]) -> dict[Path, str]:
    """Output name per input: its stem, or stem_suffix where two inputs share a stem."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems, used = {}, set()
    for path in paths:
        stem = path.stem if counts[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        base, n = stem, 1
        while stem in used:  # same name in two folders
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        stems[path] = stem
    return stems


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"cannot write to output folder {folder} ({reason}); pick another with -o/--output"
        ) from None


def _weights_hint(message: str, weights: str | None) -> str:
    if "vocaseg download" in message:
        return message
    name = weights or "ViT-B/16"
    return (
        f"{message}; run 'vocaseg download {name}' on a machine with internet access "
        "(then copy the cache), or pass --weights PATH to a checkpoint file"
    )
