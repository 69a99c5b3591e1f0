"""``vocaseg segment``: segment images or folders into the classes named on the command line.

Writes, per image, ``<stem>_label.png`` (class index per pixel), ``<stem>_overlay.png`` (colours,
boundaries and an area-sorted legend) and ``<stem>.json`` (classes and their pixel fractions), each
atomically. Runs :class:`vocaseg.Segmenter`, so the results equal the Python API's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vocaseg.cli.options import (
    add_device_options,
    add_model_options,
    add_vocabulary_options,
    check_writable,
    read_vocabulary,
    resolve_model,
)
from vocaseg.errors import ImageError, UserError
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
    add_vocabulary_options(parser)
    add_model_options(parser, "--set short_side=448 --set window=0")
    parser.add_argument("-o", "--output", default="vocaseg_out", help="output folder")
    add_device_options(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight (0.5)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vocaseg.inference.segmenter import Segmenter
    from vocaseg.viz import label_png, make_palette, overlay

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    vocabulary = read_vocabulary(args)
    paths = find_images(args.inputs)
    out_dir = Path(args.output)
    check_writable(out_dir, "-o/--output")
    segmenter = Segmenter(resolve_model(args), device=args.device, dtype=args.dtype)
    segmenter.set_vocabulary(vocabulary)
    vocabulary = segmenter.vocabulary  # with "background" when the protocol added it
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
