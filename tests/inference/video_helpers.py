"""Generated videos for the video tests: a square moving over colour waves, written with PyAV
in real containers (optionally with an audio stream), decoded back independently of vocaseg."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vocaseg.inference.segmenter import Segmenter
from vocaseg.models.registry import create_model

CLASSES = ["cat", "sofa; couch", "floor"]


def tiny_segmenter(clip) -> Segmenter:
    model = create_model("maskclip", clip=clip, templates="single", short_side=48, window=0)
    segmenter = Segmenter(model)
    segmenter.set_vocabulary(CLASSES)
    return segmenter


def moving_square(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """``count`` RGB frames [H, W, 3]: colour waves and a red square moving right 3 px a frame
    (the tiny random model gives all three classes on it, and labels that change over time)."""
    y, x = np.mgrid[0:height, 0:width]
    waves = [np.sin(x / 5), np.cos(y / 4), np.sin((x + y) / 7)]
    background = 128 + 127 * np.stack(waves, axis=-1)
    frames = []
    for t in range(count):
        frame = background.copy()
        left = (3 * t) % (width - 16)
        frame[height // 3 : height // 3 + 16, left : left + 16] = (255, 0, 40)
        frames.append(frame.round().astype(np.uint8))
    return frames


def write_video(
    path: Path,
    frames: list[np.ndarray],
    rate: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = False,
) -> Path:
    """Encode ``frames`` with PyAV (container from the suffix); ``audio`` adds an AAC track."""
    av = pytest.importorskip("av")
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=Fraction(rate))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        sound = container.add_stream("aac", rate=8000, layout="mono") if audio else None
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = np.zeros((1, 8000 * len(frames) // rate), dtype=np.float32)
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate = 8000
            for packet in [*sound.encode(chunk), *sound.encode()]:
                container.mux(packet)
    return path


def decode(path: Path) -> list[np.ndarray]:
    """Every frame of the first video stream as RGB, straight from PyAV."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
