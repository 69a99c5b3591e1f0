"""Text-embedding speed: the 171 COCO-Stuff classes x TagCLIP's 15 COCO templates (2 565 prompts)
through a random ViT-B/16-sized text tower (width 512, 12 layers, 8 heads, 77-token context).

Rows, measured side by side in one run:
- cold: a fresh ``TextEmbedder`` with empty caches (hashes the text weights, encodes every prompt
  in batches cut to their longest prompt, writes the disk cache);
- memory: the same vocabulary again (process-wide cache, zero encoder calls; best of 3);
- disk: a fresh embedder after clearing the memory cache (what a new process sees; best of 3);
- full-context vs trimmed: the same prompts of ``--subset`` classes encoded at all 77 positions as
  in the original CLIP, against vocaseg's trimmed batches (the ratio is the speed-up).

Run: ``python benchmarks/bench_text.py [--classes 171] [--subset 16] [--threads N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources

import torch
import torch.nn.functional as F

from vocaseg.clip import tokenize
from vocaseg.clip.model import CLIP, CLIPConfig
from vocaseg.text.embed import TextEmbedder, clear_memory_cache, text_weights_id
from vocaseg.text.templates import get_templates
from vocaseg.text.vocab import Vocabulary


def vit_b16_text_tower() -> CLIP:
    """ViT-B/16 text side; the image tower is shrunk to one tiny layer (text encoding never uses it)."""
    config = CLIPConfig(
        embed_dim=512,
        image_size=32,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=16,
        vision_heads=1,
        text_width=512,
        text_layers=12,
        text_heads=8,
    )
    torch.manual_seed(0)
    return CLIP(config).eval()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def best_of(repeats: int, fn):
    """Output and the fastest of ``repeats`` timings (other jobs share the CPU)."""
    runs = [timed(fn) for _ in range(repeats)]
    return runs[0][0], min(seconds for _, seconds in runs)


def full_context(clip: CLIP, names: list[str], templates: tuple[str, ...], batch: int) -> None:
    """The original recipe: every prompt padded to 77 tokens and encoded at all positions."""
    tokens = tokenize([t.replace("{}", n) for n in names for t in templates])
    with torch.inference_mode():
        for start in range(0, len(tokens), batch):
            F.normalize(clip.encode_text(tokens[start : start + batch]), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=171, help="first N COCO-Stuff classes")
    parser.add_argument("--subset", type=int, default=16, help="classes for the 77-token baseline")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    classes_file = resources.files("vocaseg.data") / "classes" / "coco_stuff.txt"
    vocab = Vocabulary.from_names(Vocabulary.from_file(classes_file).classes[: args.classes])
    templates = get_templates("coco15")
    clip = vit_b16_text_tower()
    n_prompts = len(vocab.queries) * len(templates)
    rows = []

    _, hash_s = timed(lambda: text_weights_id(clip))
    rows.append(("hash text weights (SHA-256, 63 M params)", hash_s, ""))
    with tempfile.TemporaryDirectory() as cache:
        clear_memory_cache()
        cold = TextEmbedder(clip, templates="coco15", batch_size=args.batch_size, cache_dir=cache)
        first, cold_s = timed(lambda: cold.embed(vocab))
        rows.append((f"cold: {n_prompts} prompts, {cold.encoder_calls} batches", cold_s, ""))
        again, memory_s = best_of(3, lambda: cold.embed(vocab))
        rows.append(("memory cache, same embedder", memory_s, f"{cold_s / memory_s:,.0f}x"))

        def from_disk():
            clear_memory_cache()  # what a new process sees
            fresh = TextEmbedder(
                clip, templates="coco15", cache_dir=cache, weights_id=cold.weights_id
            )
            out = fresh.embed(vocab)
            assert fresh.encoder_calls == 0
            return out

        disk, disk_s = best_of(3, from_disk)
        rows.append(("disk cache, fresh embedder", disk_s, f"{cold_s / disk_s:,.0f}x"))
        assert torch.equal(first, again) and torch.equal(first, disk)

    subset = [names[0] for names in vocab.classes[: args.subset]]
    _, full_s = timed(lambda: full_context(clip, subset, templates, args.batch_size))
    clear_memory_cache()
    trim = TextEmbedder(
        clip, templates="coco15", batch_size=args.batch_size, weights_id="bench", disk_cache=False
    )
    _, trim_s = timed(lambda: trim.embed_names(subset))
    label = f"{len(subset) * len(templates)} prompts"
    rows.append((f"{label}, 77-token context (original CLIP)", full_s, "1.0x"))
    rows.append((f"{label}, trimmed batches (vocaseg)", trim_s, f"{full_s / trim_s:.1f}x"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| step | seconds | speed-up |\n|---|---|---|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.4f} | {ratio} |")


if __name__ == "__main__":
    main()
