"""``vocaseg models`` (segmentation methods and known CLIP weights, cached or not) and
``vocaseg download NAME`` (fetch known CLIP weights into the cache, for offline use later)."""

from __future__ import annotations

import argparse
import errno


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="list segmentation models and known CLIP weights",
        description="List the segmentation methods (--model) and the known CLIP weights "
        "(--weights), with where each cached weights file lies.",
    )
    models.add_argument(
        "name", nargs="?", metavar="NAME", help="a method: list every setting --set accepts"
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


def describe_settings(name: str) -> str:
    """A method's description, towers and every config key with its default and help."""
    import json

    from vocaseg.config import field_help, to_dict
    from vocaseg.models.registry import build_config, get_entry

    entry = get_entry(name)
    config = to_dict(build_config(name))
    helps = field_help(entry.config_class)
    towers = entry.towers if isinstance(entry.towers, dict) else "depends on the config"
    lines = [
        f"{name}: {entry.description}",
        f"  needs trained weights: {'yes (a model folder)' if entry.trained else 'no'}",
        f"  CLIP towers: {towers}",
        "",
        "settings (--set KEY=VALUE; in a training config under model:):",
    ]
    width = max(len(k) for k in config)
    for key, value in config.items():
        shown = json.dumps(value) if not isinstance(value, str) else value
        if len(shown) > 28:
            shown = shown[:25] + "..."
        lines.append(f"  {key:<{width}}  {shown:<28}  {helps.get(key, '')}")
    return "\n".join(lines)


def run_models(args: argparse.Namespace) -> int:
    from vocaseg.clip import hub
    from vocaseg.clip.weights import KNOWN_WEIGHTS
    from vocaseg.models.registry import get_entry, list_models

    if args.name:
        print(describe_settings(args.name))
        return 0

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
    from vocaseg.cli.options import check_writable
    from vocaseg.clip.hub import cache_root, candidate_paths
    from vocaseg.clip.weights import KNOWN_WEIGHTS, canonical_name, download, known_names
    from vocaseg.errors import ConfigError, UserError, WeightsNotFoundError

    unknown = [name for name in args.names if canonical_name(name) not in known_names()]
    if unknown:
        raise ConfigError(
            f"unknown CLIP weights {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(known_names())}"
        )
    root = cache_root(args.cache_dir)
    check_writable(root, "--cache-dir")
    for name in args.names:
        try:
            path = download(name, args.cache_dir)
        except WeightsNotFoundError as err:
            # the hub's text tells users of other commands to run this one; here, say why it failed
            reasons = str(err).partition("Tried: ")[2].partition("; looked in:")[0] or str(err)
            target = candidate_paths(KNOWN_WEIGHTS[canonical_name(name)], root)[-1]
            raise UserError(
                f"could not download {name}: {reasons}; check the network (or $HTTPS_PROXY), or "
                f"copy the file from a connected machine to {target}"
            ) from None
        except OSError as err:
            reason = "disk full" if err.errno == errno.ENOSPC else err.strerror or err
            raise UserError(f"could not write {name} into {root} ({reason})") from None
        print(f"{name}: {path}")
    return 0
