"""Segment-path speed: MaskCLIP ViT-B/16 (random weights) through ``Segmenter`` vs the bare image
encoder at the same input size, plus the cost of encoding a vocabulary without the cache.

Measures, per short side S (whole-image inference on S×S images, CPU float32, batch B):

- ``encoder``: ``clip.encode_image`` on a normalised [B, 3, S, S] batch (the floor for any method
  that runs the CLIP image encoder once per image);
- ``segment``: ``Segmenter.predict_arrays`` on B uint8 images of S×S with the vocabulary cached
  (normalise, dense last layer, cosine scores, upsample, softmax, per-class max, argmax, areas);
- ``vocabulary``: ``encode_vocabulary`` of 20 VOC names × 85 templates with empty caches.

Runs are interleaved (encoder, segment, encoder, ...) so load from other jobs hits both alike.
Usage: ``python benchmarks/bench_segment.py --sizes 448 512 --batch 8 --repeats 3``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

VOC20 = (
    "aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, dining table, dog, horse, "
    "motorbike, person, potted plant, sheep, sofa, train, tv monitor"
)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    os.environ["VOCASEG_CACHE"] = tempfile.mkdtemp(prefix="vocaseg_bench_")
    torch.set_num_threads(args.threads)

    from vocaseg.inference.predict import normalize
    from vocaseg.inference.segmenter import Segmenter
    from vocaseg.models.registry import create_model
    from vocaseg.text.embed import clear_memory_cache
    from vocaseg.text.vocab import Vocabulary

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}")
    vocab = Vocabulary.parse(VOC20)
    rows = []
    for size in args.sizes:
        model = create_model("maskclip", short_side=size, window=0)  # random ViT-B/16
        seg = Segmenter(model)
        clear_memory_cache()
        vocab_s = timed(seg.set_vocabulary, vocab)  # cold: no memory or disk cache
        cached_s = timed(seg.set_vocabulary, vocab)
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.batch)]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        pixels = normalize(batch, model.preprocess)
        enc, full = [], []
        with torch.inference_mode():
            model.clip.encode_image(pixels[:1])  # warm-up
            seg.predict_arrays(arrays[:1])
            for _ in range(args.repeats):
                enc.append(timed(model.clip.encode_image, pixels))
                full.append(timed(seg.predict_arrays, arrays))
        enc_s, seg_s = statistics.median(enc), statistics.median(full)
        rows.append((size, enc_s, seg_s, vocab_s, cached_s))
        print(
            f"S={size}: encoder {enc_s:.2f}s, segment {seg_s:.2f}s "
            f"({100 * (seg_s / enc_s - 1):+.1f}%), vocabulary cold {vocab_s:.2f}s, "
            f"cached {1000 * cached_s:.2f}ms",
            flush=True,
        )
    b = args.batch
    print(
        "\n| short side | encoder s/batch | segment s/batch | overhead | segment img/s "
        "| latency/img | + cold vocabulary per batch: img/s | vocabulary cold / cached |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, enc_s, seg_s, vocab_s, cached_s in rows:
        print(
            f"| {size} | {enc_s:.2f} | {seg_s:.2f} | {100 * (seg_s / enc_s - 1):+.1f}% "
            f"| {b / seg_s:.2f} | {seg_s / b:.2f} s | {b / (seg_s + vocab_s):.2f} "
            f"| {vocab_s:.1f} s / {1000 * cached_s:.2f} ms |"
        )


if __name__ == "__main__":
    main()
