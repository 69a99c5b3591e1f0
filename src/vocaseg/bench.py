"""Speed and memory of any registered method through the path users run (``vocaseg bench``).

Measures a :class:`vocaseg.Segmenter`:

- vocabulary encoding, cold (a fresh model, empty memory and disk text caches: what the first
  ``set_vocabulary`` of a new process costs) and cached (the same vocabulary again);
- ``Segmenter.predict_arrays`` on random uint8 images of ``size``×``size`` in batches of
  ``batch_size`` (resize, normalise, windows, dense logits, stitch, finalize, argmax, areas):
  seconds per batch (median, min), images/s at the median, seconds per image;
- peak memory: ``torch.cuda.max_memory_allocated`` over the image runs on a GPU, else the process's
  peak resident set size (``resource.getrusage``; it includes loading the model).

Nothing here asserts a time; ``benchmarks/`` scripts and the CLI print what it returns.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from vocaseg.errors import UserError
from vocaseg.inference.segmenter import Segmenter
from vocaseg.text.vocab import Vocabulary

#: Class names of ``--classes N`` (ADE20K-Full's 847 names: realistic lengths, any N up to 847).
NAMES_LIST = "ade847"


def numbered_vocabulary(num_classes: int) -> Vocabulary:
    """The first ``num_classes`` classes of ADE20K-Full (847 names)."""
    from vocaseg.data.classlists import load_class_list

    names = load_class_list(NAMES_LIST)
    if not 1 <= num_classes <= len(names):
        raise UserError(
            f"--classes {num_classes}: choose 1 to {len(names)} classes, or name them "
            '(--classes "cat, dog")'
        )
    return Vocabulary(names.classes[:num_classes])


@contextmanager
def empty_text_cache() -> Iterator[None]:
    """Run with an empty in-memory text cache and a fresh, temporary on-disk one."""
    from vocaseg.text.embed import clear_memory_cache

    clear_memory_cache()
    previous = os.environ.get("VOCASEG_CACHE")
    with tempfile.TemporaryDirectory(prefix="vocaseg_bench_") as folder:
        os.environ["VOCASEG_CACHE"] = folder
        try:
            yield
        finally:
            if previous is None:
                del os.environ["VOCASEG_CACHE"]
            else:
                os.environ["VOCASEG_CACHE"] = previous
            clear_memory_cache()


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, synchronising a GPU before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, Linux: KiB


def bench_vocabulary(segmenter: Segmenter, vocabulary: Vocabulary) -> dict[str, float]:
    """Seconds of the first ``set_vocabulary`` (empty text caches) and of a repeat (cached).

    Call it on a fresh segmenter: its model builds its text embedder inside the cold call.
    """
    with empty_text_cache():
        cold = _timed(lambda: segmenter.set_vocabulary(vocabulary), segmenter.device)
        cached = _timed(lambda: segmenter.set_vocabulary(vocabulary), segmenter.device)
    return {"cold_s": cold, "cached_s": cached}


def bench_images(
    segmenter: Segmenter,
    size: int,
    batch_size: int,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``segmenter.predict_arrays`` on ``batch_size`` random ``size``×``size`` images.

    ``warmup`` untimed batches, then ``repeats`` timed ones; the vocabulary must be set.
    """
    if size < 1 or batch_size < 1 or warmup < 0 or repeats < 1:
        raise UserError(
            f"need size >= 1, batch size >= 1, warmup >= 0 and repeats >= 1; got size {size}, "
            f"batch size {batch_size}, warmup {warmup}, repeats {repeats}"
        )
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch_size)]
    device = segmenter.device
    for _ in range(warmup):
        segmenter.predict_arrays(arrays)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [_timed(lambda: segmenter.predict_arrays(arrays), device) for _ in range(repeats)]
    if device.type == "cuda":
        memory = {"kind": "cuda_max_memory_allocated", "bytes": torch.cuda.max_memory_allocated()}
    else:
        memory = {"kind": "process_peak_rss", "bytes": peak_rss_bytes()}
    median = statistics.median(times)
    return {
        "batch_s": times,
        "median_s": median,
        "min_s": min(times),
        "images_per_s": batch_size / median,
        "per_image_s": median / batch_size,
        "peak_memory": memory,
    }


def run_bench(
    segmenter: Segmenter,
    vocabulary: Vocabulary,
    size: int = 512,
    batch_size: int = 8,
    warmup: int = 1,
    repeats: int = 3,
) -> dict[str, Any]:
    """Vocabulary and image timings of a fresh ``segmenter`` plus the settings that move them."""
    model = segmenter.model
    vocab = bench_vocabulary(segmenter, vocabulary)
    images = bench_images(segmenter, size, batch_size, warmup, repeats)
    return {
        "method": model.name,
        "config": model.config_dict(),
        "clip": model.clip_source,
        "preprocess": asdict(model.preprocess),
        "device": str(segmenter.device),
        "device_name": (
            torch.cuda.get_device_name(segmenter.device)
            if segmenter.device.type == "cuda"
            else "cpu"
        ),
        "dtype": str(segmenter.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "size": size,
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "num_classes": len(vocabulary),
        "num_queries": len(vocabulary.queries),
        "vocabulary": vocab,
        "images": images,
    }


def format_table(result: dict[str, Any]) -> str:
    """A small text table of :func:`run_bench`'s result."""
    images, vocab = result["images"], result["vocabulary"]
    memory = images["peak_memory"]
    mem = "n/a" if memory["bytes"] is None else f"{memory['bytes'] / 2**20:.0f} MiB"
    rows = [
        ("method", f"{result['method']} ({result['device']}, {result['dtype']})"),
        ("images", f"{result['batch_size']} x {result['size']}x{result['size']} per batch"),
        ("classes", f"{result['num_classes']} ({result['num_queries']} queries)"),
        ("vocabulary cold", f"{vocab['cold_s']:.3f} s"),
        ("vocabulary cached", f"{1000 * vocab['cached_s']:.3f} ms"),
        ("batch median / min", f"{images['median_s']:.3f} s / {images['min_s']:.3f} s"),
        ("images/s", f"{images['images_per_s']:.2f}"),
        ("per image", f"{images['per_image_s']:.3f} s"),
        (f"peak memory ({memory['kind']})", mem),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
