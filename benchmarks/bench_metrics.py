"""Is metric accumulation negligible next to the model? Confusion-matrix accumulation for 847
classes (ADE-847) at 512x512 versus one ViT-B/16 image-encoder forward at 512x512 (random
weights, ``vocaseg.clip.build("ViT-B/16")``), measured side by side in one process.

    python benchmarks/bench_metrics.py [--repeats 5] [--threads 2]

Prints median times and the ratios; the results go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from vocaseg import clip, metrics

NUM_CLASSES, SIZE = 847, 512


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    gt = rng.integers(0, NUM_CLASSES, size=(SIZE, SIZE))
    gt[rng.random((SIZE, SIZE)) < 0.1] = 65535  # ADE-847's ignore value
    pred = rng.integers(0, NUM_CLASSES, size=(SIZE, SIZE))
    gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
    accumulator = metrics.ConfusionMatrix(NUM_CLASSES, ignore_index=65535)

    model = clip.build("ViT-B/16").eval()
    image = torch.randn(1, 3, SIZE, SIZE)

    def torch_bincount() -> object:
        # The obvious all-torch implementation, for comparison with the numpy path on CPU.
        keep = gt_t != 65535
        index = gt_t[keep] * NUM_CLASSES + pred_t[keep]
        return torch.bincount(index, minlength=NUM_CLASSES * NUM_CLASSES)

    def forward() -> object:
        with torch.inference_mode():
            return model.visual.forward_features(image)

    rows = {
        "ConfusionMatrix.update (torch tensors)": median_seconds(
            lambda: accumulator.update(pred_t, gt_t), args.repeats
        ),
        "confusion_matrix (numpy arrays)": median_seconds(
            lambda: metrics.confusion_matrix(pred, gt, NUM_CLASSES, 65535), args.repeats
        ),
        "masked torch.bincount (all-torch, CPU)": median_seconds(torch_bincount, args.repeats),
        "ViT-B/16 image encoder forward": median_seconds(forward, args.repeats),
    }
    reference = rows["ViT-B/16 image encoder forward"]
    print(
        f"{NUM_CLASSES} classes, {SIZE}x{SIZE}, {args.threads} threads, torch {torch.__version__}"
    )
    print(f"{'operation':<42}{'median ms':>12}{'x forward':>12}")
    for name, seconds in rows.items():
        print(f"{name:<42}{1000 * seconds:>12.1f}{seconds / reference:>12.4f}")


if __name__ == "__main__":
    main()
