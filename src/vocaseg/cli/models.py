"""``vocaseg models`` (segmentation methods and known CLIP weights, cached or not) and
``vocaseg download NAME`` (fetch known CLIP weights into the cache, for offline use later)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="list segmentation models and known CLIP weights",
        description="List the segmentation methods (--model) and the known CLIP weights "
        "(--weights), with where each cached weights file lies.",
    )
    models.add_argument("--cache-dir", help="weights cache (default $VOCASEG_CACHE or ~/.cache)")
    models.set_defaults(run=run_models)
    download = subparsers.add_parser(
        "download",
        help="download known CLIP weights into the cache",
        description="Download known CLIP weights (see 'vocaseg models') into the cache, e.g. on "
        "a connected machine before copying the cache folder to an offline one.",
    )
    download.add_argument("names", nargs="+", metavar="NAME", help="e.g. ViT-B/16 RN50")
    download.add_argument("--cache-dir", help="weights cache (default $VOCASEG_CACHE or ~/.cache)")
    download.set_defaults(run=run_download)


def run_models(args: argparse.Namespace) -> int:
    from vocaseg.clip import hub
    from vocaseg.clip.weights import KNOWN_WEIGHTS
    from vocaseg.models.registry import get_entry, list_models

    print("models (--model):")
    names = list_models()
    width = max(len(n) for n in names)
    for name in names:
        print(f"  {name:<{width}}  {get_entry(name).description}")
    print(f"\nCLIP weights (--weights), cache {hub.cache_root(args.cache_dir)}:")
    width = max(len(n) for n in KNOWN_WEIGHTS)
    for name, entry in KNOWN_WEIGHTS.items():
        cached = hub.find_cached(entry, args.cache_dir)
        where = f"cached: {cached}" if cached else f"not cached (vocaseg download {name})"
        print(f"  {name:<{width}}  {where}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from vocaseg.clip.weights import download

    for name in args.names:
        print(f"{name}: {download(name, args.cache_dir)}")
    return 0
