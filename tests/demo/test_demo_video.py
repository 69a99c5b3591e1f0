"""The demo's video tab function: every frame segmented as ``Segmenter`` does, encoded as H.264, and
a clear message for a file that is not a video. Needs PyAV (``av``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vocaseg.demo.handlers import DemoSettings, guarded, segment_video
from vocaseg.inference.segmenter import Segmenter

av = pytest.importorskip("av", reason="the video tab needs PyAV (pip install av)")


def _write_video(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"  # takes odd sizes
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _read_video(path: Path) -> tuple[list[np.ndarray], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.codec_context.name


def test_video_frames_are_segmented_and_encoded(tiny_clip_file, tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 34, 47, 3), dtype=np.uint8)  # odd width: cropped to 46
    source = tmp_path / "clip.mp4"
    _write_video(source, frames)
    segmenter = Segmenter.from_pretrained(
        "maskclip", weights=tiny_clip_file, short_side=48, window=0, templates="single"
    )
    payload = {"path": str(source), "orig_name": "holiday.mp4"}
    answer = segment_video(segmenter, payload, "cat, dog", DemoSettings(), tmp_path)
    written, codec = _read_video(answer.video_path)
    assert codec == "h264" and len(written) == 4 and written[0].shape == (34, 46, 3)
    assert answer.message.startswith("Segmented 4 frames of holiday.mp4")
    # the shares are those of the labels Segmenter gives the decoded (cropped) frames
    decoded, _ = _read_video(source)
    segmenter.set_vocabulary("cat, dog")
    labels = [segmenter(frame[:, :46].copy()).label for frame in decoded]
    counts = np.bincount(np.stack(labels).reshape(-1), minlength=2)
    assert [row[1] for row in answer.table] == pytest.approx(100 * counts / counts.sum(), abs=0.01)


def test_not_a_video_message(tiny_clip_file, tmp_path):
    bad = tmp_path / "upload.mp4"
    bad.write_bytes(b"\x00" * 100)
    segmenter = Segmenter.from_pretrained(
        "maskclip", weights=tiny_clip_file, short_side=48, window=0, templates="single"
    )
    payload = {"path": str(bad), "orig_name": "holiday.mp4"}
    answer, message = guarded(segment_video, segmenter, payload, "cat", DemoSettings(), tmp_path)
    assert answer is None
    assert message.startswith("Error: 'holiday.mp4': it is not a video PyAV can read")
    assert not list(tmp_path.glob("*overlay*"))  # nothing half-written
