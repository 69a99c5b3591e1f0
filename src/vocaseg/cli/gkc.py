"""``vocaseg gkc build-synonyms`` and ``vocaseg gkc score-synonyms``: the text-diversification data
of GKC (Han et al., ICCV 2023, "Text Diversification"; docs/methods/gkc.md).

    vocaseg gkc build-synonyms -o synonyms.json           # raw WordNet lists (needs nltk + wordnet)
    vocaseg gkc score-synonyms -o scores.json --data-root data/ --weights ViT-B/32
    vocaseg gkc caption-nouns captions_train2017.json -o nouns.json  # needs nltk + tagger data

``build-synonyms`` writes the raw WordNet noun lemmas of each COCO panoptic class (curate them by
hand: wrong senses stay in). ``score-synonyms`` scores, for every non-crowd training segment, each
synonym of its class with CLIP on the segment's bounding-box crop and writes the released
per-image format with the synonym list's SHA-256 (training checks it, ``data.options.scores``).
``caption-nouns`` POS-tags every COCO caption once and writes each caption's nouns, the input of
the optional caption grounding (``data.options.captions``).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gkc",
        help="GKC's synonym lists, per-instance synonym scores and caption nouns",
        description="Build WordNet synonym lists for the COCO panoptic classes, or score each "
        "training segment's synonyms with CLIP (GKC text diversification).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    build = commands.add_parser(
        "build-synonyms",
        help="raw WordNet synonym lists of the 133 COCO panoptic classes (to curate by hand)",
    )
    build.add_argument("-o", "--output", required=True, help="JSON file to write")
    build.add_argument(
        "--classes-file",
        help="class names, one per line (default: the normalised COCO panoptic names)",
    )
    build.set_defaults(run=run_build)
    score = commands.add_parser(
        "score-synonyms",
        help="CLIP scores of each training segment's synonyms (released per-image format)",
    )
    score.add_argument("-o", "--output", required=True, help="JSON file to write")
    score.add_argument("--data-root", help="folder holding coco/ (default: the usual roots)")
    score.add_argument("--split", default="train", help="COCO panoptic split (default train)")
    score.add_argument(
        "--synonyms", help="synonym file (default: the shipped coco133_synonyms.json)"
    )
    score.add_argument(
        "--weights",
        default="ViT-B/32",
        help="CLIP weights: a known name or a file (default ViT-B/32, as released)",
    )
    score.add_argument("--batch-size", type=int, default=64, help="crops per CLIP forward pass")
    score.add_argument("--limit", type=int, metavar="N", help="score only the first N images")
    score.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    score.set_defaults(run=run_score)
    nouns = commands.add_parser(
        "caption-nouns",
        help="the nouns of each COCO caption (NLTK POS tags), for caption grounding",
    )
    nouns.add_argument("captions", help="official COCO captions file (captions_train2017.json)")
    nouns.add_argument("-o", "--output", required=True, help="nouns JSON to write")
    nouns.set_defaults(run=run_caption_nouns)
    parser.set_defaults(run=lambda _: parser.print_help() or 0)


def run_build(args: argparse.Namespace) -> int:
    from vocaseg.data.synonyms import build_synonyms, coco133_class_names, write_synonyms
    from vocaseg.text.vocab import Vocabulary

    names = (
        Vocabulary.from_file(args.classes_file).class_names
        if args.classes_file
        else coco133_class_names()
    )
    lists = build_synonyms(names)
    write_synonyms(args.output, lists)
    count = sum(len(v) - 1 for v in lists.values())
    print(f"wrote {args.output}: {len(lists)} classes, {count} synonyms (curate before training)")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from vocaseg import clip as clip_lib
    from vocaseg.data.panoptic import load_panoptic
    from vocaseg.data.synonym_scoring import score_synonyms
    from vocaseg.data.synonyms import (
        coco133_class_names,
        load_synonyms,
        synonyms_sha256,
        write_synonym_scores,
    )
    from vocaseg.errors import UserError

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    names = coco133_class_names()
    synonyms = load_synonyms(args.synonyms, names)
    dataset = load_panoptic(args.data_root, args.split)
    model = clip_lib.load(args.weights, device=args.device)
    if model.visual is None:
        raise UserError(f"{args.weights} has no image tower; pass whole CLIP weights")
    records = score_synonyms(
        dataset,
        model,
        synonyms,
        names,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
    )
    write_synonym_scores(args.output, records, synonyms_sha256(args.synonyms))
    segments = sum(len(r["segments_info"]) for r in records)
    print(f"wrote {args.output}: {len(records)} images, {segments} segments")
    return 0


def run_caption_nouns(args: argparse.Namespace) -> int:
    from vocaseg.data.caption_nouns import extract_caption_nouns, nltk_tagger, write_caption_nouns

    record = extract_caption_nouns(args.captions, nltk_tagger())
    write_caption_nouns(args.output, record)
    captions = sum(len(c) for c in record["images"].values())
    print(f"wrote {args.output}: {len(record['images'])} images, {captions} captions")
    return 0
