"""The demo's video tab: segment a video frame by frame and encode the overlay as an H.264 MP4.

Needs PyAV (module ``av``); the page shows the tab only when it imports. This is the one function the
tab calls, a stand-in until ``vocaseg.inference.video`` (temporal smoothing, batching) replaces its
body; frames are segmented independently here, as images are.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vocaseg.errors import ImageError
from vocaseg.io import atomic_path
from vocaseg.viz import make_palette, overlay

#: Frames segmented per video (the rest are dropped: the CPU demo stays responsive).
MAX_FRAMES = 300


def video_available() -> bool:
    """Whether PyAV (the ``[video]`` extra) can be imported."""
    return importlib.util.find_spec("av") is not None


def overlay_video(
    source: Path,
    target: Path,
    label_frame: Callable[[np.ndarray], tuple[np.ndarray, list[str]]],
    max_frames: int = MAX_FRAMES,
    alpha: float = 0.5,
) -> tuple[int, np.ndarray, list[str]]:
    """Write the overlay of the first ``max_frames`` frames of ``source`` to ``target`` (MP4).

    ``label_frame`` maps an RGB frame [H, W, 3] uint8 to its label map [H, W] and class names.
    Returns (frames written, pixel share per class over those frames [K], class names). Odd frame
    sizes lose their last row/column (H.264 in 4:2:0 needs even sizes). A file PyAV cannot read
    raises :class:`ImageError` whose message starts "it is ..." (the caller names the file).
    """
    import av

    try:
        with av.open(str(source)) as reader, atomic_path(target) as tmp:
            if not reader.streams.video:
                raise ImageError("it holds no video stream; upload an MP4, WebM, ... file")
            stream = reader.streams.video[0]
            with av.open(str(tmp), mode="w", format="mp4") as writer:
                frames = (f.to_ndarray(format="rgb24") for f in reader.decode(stream))
                written, counts, names = _encode(
                    frames,
                    writer,
                    stream.average_rate or Fraction(25),
                    label_frame,
                    max_frames,
                    alpha,
                )
    except av.error.FFmpegError as err:
        reason = err.strerror or type(err).__name__
        raise ImageError(
            f"it is not a video PyAV can read ({reason}); upload an MP4, WebM, ... file"
        ) from None
    return written, counts / max(counts.sum(), 1), names


def _encode(
    frames: Iterator[np.ndarray],
    writer: Any,
    rate: Fraction,
    label_frame: Callable[[np.ndarray], tuple[np.ndarray, list[str]]],
    max_frames: int,
    alpha: float,
) -> tuple[int, np.ndarray, list[str]]:
    """Segment, overlay and encode up to ``max_frames`` RGB frames [H, W, 3] into ``writer``."""
    import av

    out, counts, names, written = None, np.zeros(0, dtype=np.int64), [], 0
    for rgb in frames:
        if written >= max_frames:
            break
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]  # even [H, W] for 4:2:0
        label, names = label_frame(rgb)
        if out is None:
            out = writer.add_stream("libx264", rate=rate)
            out.width, out.height, out.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
            colours = make_palette(len(names))
            counts = np.zeros(len(names), dtype=np.int64)
        counts += np.bincount(label.reshape(-1), minlength=len(names))
        picture = np.asarray(overlay(rgb, label, names, alpha, colours, legend=False))
        writer.mux(out.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        written += 1
    if out is None:
        raise ImageError("it has no frame that could be decoded; upload another video")
    writer.mux(out.encode())  # flush the encoder
    return written, counts, names
