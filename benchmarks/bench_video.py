"""The video path (``vocaseg.inference.video``): peak memory over video length, and speed against
the same frames segmented as images.

- ``memory``: ``write_video_outputs`` (decode, segment, overlay MP4, label zip, JSON) on generated
  MP4s of 100 and 1,000 frames, each in a fresh subprocess; peak RSS (``ru_maxrss``) must not grow
  with the frame count. A tiny random MaskCLIP keeps 1,000 frames quick (the model's share of the
  memory does not depend on the video's length).
- ``speed``: frames/s of ``write_video_outputs`` on an MP4 vs ``vocaseg segment`` (the image
  command, run in-process on the same model object) on the same decoded frames saved as PNG files;
  and, without any writing, iterating ``Segmenter.segment_video`` on the MP4 vs
  ``Segmenter.predict_arrays`` on the already-decoded frames in batches of the same size. Runs
  are interleaved (the order alternates each round); the median and the best run are reported
  (other jobs on a shared machine slow single runs); ratio = video frames/s / image frames/s
  (>= 0.95 required). ``--model base``: MaskCLIP ViT-B/16 (random weights);
  ``--model tiny``: a width-64 ViT, where decoding and encoding weigh most (the worst case for
  the video path).

Run: ``python benchmarks/bench_video.py [memory|speed|both] [--model base|tiny] [--frames 48]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from unittest import mock

import av
import numpy as np
import torch
from PIL import Image

VOC20 = (
    "aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, dining table, dog, horse, "
    "motorbike, person, potted plant, sheep, sofa, train, tv monitor"
)


def synthetic_frame(t: int, height: int, width: int) -> np.ndarray:
    """Colour waves drifting with t and a red square moving right (RGB uint8 [H, W, 3])."""
    y, x = np.mgrid[0:height, 0:width]
    waves = [np.sin((x + t) / 15), np.cos(y / 11), np.sin((x + y - 2 * t) / 23)]
    frame = 128 + 127 * np.stack(waves, axis=-1)
    left = (5 * t) % (width - 48)
    frame[height // 3 : height // 3 + 48, left : left + 48] = (255, 0, 40)
    return frame.round().astype(np.uint8)


def write_mp4(path: Path, frames: int, height: int, width: int) -> Path:
    """Encode ``frames`` synthetic frames one at a time (the generator holds no list)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(t, height, width), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def build_segmenter(kind: str, short_side: int):
    from vocaseg.inference.segmenter import Segmenter
    from vocaseg.models.registry import create_model, get_entry

    torch.manual_seed(0)
    if kind == "base":
        model = create_model("maskclip", short_side=short_side, window=0)  # random ViT-B/16
    else:  # the tests' tiny random CLIP
        clip = get_entry("maskclip").tiny["clip"]
        settings = {"clip": clip, "templates": "single", "short_side": short_side, "window": 0}
        model = create_model("maskclip", settings, pretrained=False)
    segmenter = Segmenter(model)
    segmenter.set_vocabulary(VOC20)
    return segmenter


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB


def memory_child(video: str, short_side: int) -> None:
    """Run in a subprocess: segment ``video`` with all outputs, print peak RSS as JSON."""
    from vocaseg.inference.video_outputs import write_video_outputs

    segmenter = build_segmenter("tiny", short_side)
    first = synthetic_frame(0, 240, 320)
    segmenter.predict_arrays([first] * 8)  # warm-up: allocator pools at batch size
    before = peak_rss_mib()
    with tempfile.TemporaryDirectory() as out:
        summary = write_video_outputs(segmenter, video, out, progress=False)
    print(json.dumps({"frames": summary["frame_count"], "before": before, "peak": peak_rss_mib()}))


def memory(args: argparse.Namespace, work: Path) -> None:
    print("| frames | peak RSS before the video (MiB) | peak RSS after (MiB) | growth (MiB) |")
    print("|---|---|---|---|")
    for frames in (100, 1000):
        video = write_mp4(work / f"m{frames}.mp4", frames, 240, 320)
        command = [sys.executable, __file__, "--child", str(video), "--short-side", "224"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        growth = row["peak"] - row["before"]
        print(f"| {row['frames']} | {row['before']:.0f} | {row['peak']:.0f} | {growth:.1f} |")


def speed(args: argparse.Namespace, work: Path) -> None:
    from vocaseg.cli import segment as segment_command
    from vocaseg.cli.main import main as cli_main
    from vocaseg.inference.video_outputs import write_video_outputs

    video = write_mp4(work / "s.mp4", args.frames, args.height, args.width)
    with av.open(str(video)) as container:  # the frames exactly as the video path sees them
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    folder = work / "frames"
    folder.mkdir()
    for i, frame in enumerate(decoded):
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    segmenter = build_segmenter(args.model, args.short_side)
    segmenter.predict_arrays(decoded[: args.batch])  # warm-up
    b = args.batch

    def video_outputs() -> None:
        with tempfile.TemporaryDirectory(dir=work) as out:
            write_video_outputs(segmenter, video, out, batch_size=b, progress=False)

    def image_command() -> None:
        with tempfile.TemporaryDirectory(dir=work) as out:
            argv = ["segment", str(folder), "--classes", VOC20, "-o", out, "--batch-size", str(b)]
            with (
                open(os.devnull, "w") as null,
                contextlib.redirect_stdout(null),
                contextlib.redirect_stderr(null),  # its progress bar
            ):
                assert cli_main(argv) == 0

    def video_iterate() -> None:
        for _ in segmenter.segment_video(video, batch_size=b):
            pass

    def arrays_batched() -> None:
        for i in range(0, len(decoded), b):
            segmenter.predict_arrays(decoded[i : i + b])

    pairs = [
        ("with outputs: write_video_outputs vs vocaseg segment PNGs", video_outputs, image_command),
        ("no writing: segment_video vs predict_arrays", video_iterate, arrays_batched),
    ]
    times: dict[str, list[float]] = {}
    # the image command builds its Segmenter around this model (the text embeddings come from
    # the process-wide cache, as the vocabulary is the same)
    with mock.patch.object(segment_command, "resolve_model", return_value=segmenter.model):
        for round_ in range(args.repeats):
            for _, video_fn, image_fn in pairs:
                order = (video_fn, image_fn) if round_ % 2 == 0 else (image_fn, video_fn)
                for fn in order:  # interleaved, the order alternating each round
                    start = time.perf_counter()
                    fn()
                    times.setdefault(fn.__name__, []).append(time.perf_counter() - start)
    n = len(decoded)
    print(
        f"torch {torch.__version__}, PyAV {av.__version__}, {torch.get_num_threads()} threads, "
        f"model {args.model}, {n} frames {args.width}x{args.height}, short side "
        f"{args.short_side}, batch {b}, {args.repeats} runs each"
    )
    print(
        "| comparison | video frames/s (median / best) | image frames/s (median / best) "
        "| ratio video/image (median / best) |"
    )
    print("|---|---|---|---|")
    for label, video_fn, image_fn in pairs:
        video_s, image_s = times[video_fn.__name__], times[image_fn.__name__]
        video_fps = (n / statistics.median(video_s), n / min(video_s))
        image_fps = (n / statistics.median(image_s), n / min(image_s))
        print(
            f"| {label} | {video_fps[0]:.2f} / {video_fps[1]:.2f} "
            f"| {image_fps[0]:.2f} / {image_fps[1]:.2f} "
            f"| {video_fps[0] / image_fps[0]:.3f} / {video_fps[1] / image_fps[1]:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="both", choices=["memory", "speed", "both"])
    parser.add_argument("--model", default="base", choices=["base", "tiny"])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", metavar="VIDEO", help=argparse.SUPPRESS)  # memory subprocess
    args = parser.parse_args()
    if args.child:
        memory_child(args.child, args.short_side)
        return
    os.environ["VOCASEG_CACHE"] = tempfile.mkdtemp(prefix="vocaseg_bench_")
    with tempfile.TemporaryDirectory(prefix="vocaseg_video_") as work:
        if args.what in ("memory", "both"):
            memory(args, Path(work))
        if args.what in ("speed", "both"):
            speed(args, Path(work))


if __name__ == "__main__":
    main()
