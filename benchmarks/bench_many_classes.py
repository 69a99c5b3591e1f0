"""Many classes: peak memory and time of ``Segmenter`` on one 512² image for 20 / 1,000 / 10,000
classes (random weights, CPU float32), with class scores computed in chunks (the default) or all at
once (``--modes unchunked``, what vocaseg did before chunking).

Each (classes, mode) runs in a fresh process. Reported per run:

- ``text s`` / ``text MB``: ``set_vocabulary`` (prompt encoding, empty caches) and its peak resident
  memory beyond what the process held before;
- ``segment MB``: peak resident memory of the first ``predict_arrays`` call on one ``--size``²
  image beyond what the process held before it (model, text embeddings and imports excluded);
  ``segment s``: median of ``--repeats`` further calls;
- ``labels``: the first 12 hex digits of the SHA-256 of the label map (equal digits: equal labels).

Peak memory is the kernel's high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs``
(Linux). Usage::

    python benchmarks/bench_many_classes.py --clip tiny --classes 20 1000 10000
    python benchmarks/bench_many_classes.py --clip ViT-B/16 --classes 20 1000 --modes chunked unchunked
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODES = {"chunked": {}, "unchunked": {"chunk_size": 10**9, "keep_scores": True}}


def memory_kib() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process in KiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values


def reset_peak() -> int:
    """Reset the peak to the current resident size; returns that size in KiB."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return memory_kib()["VmRSS"]


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from vocaseg.inference.segmenter import Segmenter
    from vocaseg.models.registry import create_model, get_entry

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = get_entry(args.model).tiny["clip"] if args.clip == "tiny" else args.clip
    model = create_model(args.model, {"clip": clip, "templates": args.templates}, pretrained=False)
    segmenter = Segmenter(model, **MODES[args.mode])
    names = [f"thing {i}" for i in range(args.classes[0])]
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)

    before = reset_peak()
    start = time.perf_counter()
    segmenter.set_vocabulary(names)
    text_s = time.perf_counter() - start
    text_mb = (memory_kib()["VmHWM"] - before) / 1024

    before = reset_peak()  # the first call: nothing freed earlier can hide its peak
    result = segmenter.predict_arrays([image])[0]
    segment_mb = (memory_kib()["VmHWM"] - before) / 1024
    labels = hashlib.sha256(result.label.astype(np.int64).tobytes()).hexdigest()[:12]
    del result
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        segmenter.predict_arrays([image])
        times.append(time.perf_counter() - start)
    return {
        "text_s": text_s,
        "text_mb": text_mb,
        "segment_s": statistics.median(times),
        "segment_mb": segment_mb,
        "labels": labels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="maskclip")
    parser.add_argument(
        "--clip",
        default="tiny",
        help="tiny (the random CLIP of the method's tests) or a CLIP name, e.g. ViT-B/16 (random weights)",
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[20, 1000, 10000])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["chunked"])
    parser.add_argument("--templates", default="single")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)  # child run
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(child(args)))
        return
    print(
        f"{args.model}, CLIP {args.clip}, templates {args.templates}, one {args.size}² image, "
        f"{args.threads} threads"
    )
    header = f"{'classes':>8} {'mode':>10} {'text s':>8} {'text MB':>8} {'segment s':>10} "
    print(header + f"{'segment MB':>11} {'labels':>13}", flush=True)
    for classes in args.classes:
        for mode in args.modes:
            command = [sys.executable, __file__, "--mode", mode, "--classes", str(classes)]
            for key in ("model", "clip", "templates", "size", "repeats", "threads"):
                command += [f"--{key}", str(getattr(args, key))]
            cache = tempfile.mkdtemp(prefix="vocaseg_bench_")  # every run encodes its text
            env = {**os.environ, "VOCASEG_CACHE": cache}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
                if done.returncode == -9:
                    lines = ["killed (SIGKILL: out of memory?)"]
                print(f"{classes:>8} {mode:>10} failed: {lines[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{classes:>8} {mode:>10} {r['text_s']:>8.2f} {r['text_mb']:>8.0f} "
                f"{r['segment_s']:>10.2f} {r['segment_mb']:>11.0f} {r['labels']:>13}",
                flush=True,
            )


if __name__ == "__main__":
    main()
