"""The whole video job behind ``vocaseg segment VIDEO``: segment a video and write, in ``out_dir``,

- ``<stem>_overlay.mp4``: class colours, boundaries and a legend inside every frame, at the input's
  size (odd sizes padded by one pixel for yuv420p), frame rate and frame count;
- ``<stem>_labels.zip``: one lossless PNG label map per frame (``000000.png``, ...);
- ``<stem>.json``: fps, size, frame count, codec, what was dropped, per-class areas over the whole
  video and, per frame, its time and per-class areas (each frame's areas sum to 1).

All three are written under temporary names and renamed only when the whole video is done (the
JSON last, so its presence means the set is complete); an interrupted run leaves no half-written
file. The per-frame JSON records are spooled to a temporary
file, not held in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from vocaseg.errors import VideoError
from vocaseg.inference.video import VideoFrameResult, VideoSegmentation
from vocaseg.inference.video_io import VideoInput, import_av
from vocaseg.inference.video_write import (
    PIXEL_FORMAT,
    LabelArchiveWriter,
    OverlayVideoWriter,
    draw_legend_inside,
)
from vocaseg.io import atomic_path
from vocaseg.viz import make_palette, overlay

if TYPE_CHECKING:
    from vocaseg.inference.segmenter import Segmenter

LABELS_FORMAT = (
    "zip of PNG files, one per frame (000000.png, 000001.png, ...); pixel value = class index "
    "(palette PNG up to 256 classes, 16-bit grayscale above)"
)


def output_paths(out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """The files :func:`write_video_outputs` writes for ``stem``."""
    out = Path(out_dir)
    return {
        "overlay": out / f"{stem}_overlay.mp4",
        "labels": out / f"{stem}_labels.zip",
        "json": out / f"{stem}.json",
    }


def write_video_outputs(
    segmenter: Segmenter,
    video: VideoInput,
    out_dir: str | os.PathLike,
    stem: str | None = None,
    *,
    alpha: float = 0.5,
    every: int = 1,
    start: float | None = None,
    end: float | None = None,
    smoothing: int = 0,
    batch_size: int = 8,
    fps: float | None = None,
    encoder: str | None = None,
    progress: bool = True,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment ``video`` with ``segmenter`` (vocabulary already set) and write the overlay video,
    label archive and JSON (see the module docstring). Returns the JSON's content without the
    per-frame records. ``record`` adds fields to the JSON (e.g. the model and weights); ``encoder``
    forces an FFmpeg encoder (default libx264, else mpeg4); the other options are those of
    :meth:`Segmenter.segment_video`.
    """
    import_av()  # the overlay video needs PyAV even when the frames do not: fail before reading
    if stem is None:
        stem = Path(video).stem if isinstance(video, (str, os.PathLike)) else "video"
    paths = output_paths(out_dir, stem)
    frames = segmenter.segment_video(
        video,
        every=every,
        start=start,
        end=end,
        smoothing=smoothing,
        batch_size=batch_size,
        fps=fps,
    )
    info = frames.info
    colours = make_palette(len(segmenter.class_names))
    area_sum = np.zeros(len(segmenter.class_names), dtype=np.float64)
    count = 0
    with ExitStack() as stack:  # on success the temporary files are renamed, the JSON last
        json_tmp = stack.enter_context(atomic_path(paths["json"]))
        stack.enter_context(frames)
        writer = OverlayVideoWriter(
            stack.enter_context(atomic_path(paths["overlay"])),
            info.width,
            info.height,
            info.rate,
            encoder,
        )
        stack.callback(writer.close, flush=False)  # on failure; after writer.close() a no-op
        labels = LabelArchiveWriter(stack.enter_context(atomic_path(paths["labels"])), colours)
        stack.callback(labels.close)
        spool = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
        bar = stack.enter_context(
            tqdm(total=frames.expected_frames, unit="frame", desc="segment", disable=not progress)
        )
        for frame in frames:
            picture = overlay(
                frame.image, frame.label, frame.class_names, alpha, colours, legend=False
            )
            draw_legend_inside(picture, frame.label, frame.class_names, colours)
            writer.write(np.asarray(picture))
            labels.write(frame.label)
            _spool_frame(spool, frame)
            area_sum += frame.areas
            count += 1
            bar.update()
        if count == 0:
            raise VideoError(
                f"no frames of {info.source} lie between {frames.start:g} s and "
                f"{'the end' if end is None else f'{end:g} s'}; check the start and end times"
            )
        writer.close()
        summary = _summary(frames, writer, paths, area_sum / count, count, segmenter, record)
        _write_json(json_tmp, summary, spool)
    return summary


def _spool_frame(spool: IO[str], frame: VideoFrameResult) -> None:
    entry = {
        "index": frame.index,
        "time": round(frame.time, 6),
        "segmented": frame.segmented,
        "areas": [float(a) for a in frame.areas],
    }
    spool.write(json.dumps(entry) + "\n")


def _write_json(path: Path, summary: dict[str, Any], spool: IO[str]) -> None:
    """``summary`` with a ``frames`` list copied from the spool (one record per line)."""
    head = json.dumps(summary, indent=2, ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head[:-2] + ',\n  "frames": [')  # reopen the object: drop "\n}"
        spool.seek(0)
        for n, line in enumerate(spool):
            handle.write(("\n    " if n == 0 else ",\n    ") + line.rstrip("\n"))
        handle.write("\n  ]\n}\n")


def _summary(
    frames: VideoSegmentation,
    writer: OverlayVideoWriter,
    paths: dict[str, Path],
    video_areas: np.ndarray,
    count: int,
    segmenter: Segmenter,
    record: dict[str, Any] | None,
) -> dict[str, Any]:
    info = frames.info
    notes = [f"{stream} stream dropped: the overlay video has none" for stream in info.dropped]
    if info.fps_assumed:
        notes.append(f"the source has no frame rate; {info.fps:g} fps assumed (set fps)")
    if (writer.width, writer.height) != (info.width, info.height):
        notes.append(
            f"overlay padded from {info.width}x{info.height} to {writer.width}x{writer.height} "
            f"({PIXEL_FORMAT} needs even sizes); the label maps keep the input size"
        )
    if frames.corrupt:
        notes.append(f"{len(frames.corrupt)} unreadable frame(s) skipped: see corrupt_frames")
    vocabulary = segmenter.vocabulary
    assert vocabulary is not None  # VideoSegmentation checked it
    return {
        "source": info.source,
        "source_codec": info.codec,
        "source_frame_count": info.frame_count,
        "fps": info.fps,
        "frame_rate": str(info.rate),
        "width": info.width,
        "height": info.height,
        "frame_count": count,
        "start": frames.start,
        "end": frames.end,
        "every": frames.every,
        "smoothing": frames.smoothing,
        **(record or {}),
        "overlay": {
            "file": paths["overlay"].name,
            "codec": writer.codec,
            "encoder": writer.encoder,
            "pixel_format": PIXEL_FORMAT,
            "width": writer.width,
            "height": writer.height,
            "legend": "inside the frame, top-left",
        },
        "labels": {"file": paths["labels"].name, "format": LABELS_FORMAT},
        "dropped": list(info.dropped),
        "corrupt_frames": list(frames.corrupt),
        "notes": notes,
        "classes": [
            {"index": i, "name": names[0], "names": list(names), "area": float(area)}
            for i, (names, area) in enumerate(zip(vocabulary.classes, video_areas))
        ],
    }
