"""Bad video input: each case is one VideoError line naming the problem and the fix; a corrupt
frame mid-file is reported and the frames after it are kept."""

from __future__ import annotations

import sys
import wave

import numpy as np
import pytest
from PIL import Image

from inference.video_helpers import moving_square, tiny_segmenter, write_video
from vocaseg.errors import UserError, VideoError, VocasegWarning
from vocaseg.inference.video_io import is_video_path, open_video
from vocaseg.inference.video_outputs import write_video_outputs


@pytest.fixture
def seg(tiny_vit_clip):
    return tiny_segmenter(tiny_vit_clip)


def _one_line_error(call, match):
    with pytest.raises(VideoError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_not_a_video(tmp_path):
    pytest.importorskip("av")
    (tmp_path / "notes.mp4").write_text("shopping list: milk, eggs\n" * 50)
    message = _one_line_error(lambda: open_video(tmp_path / "notes.mp4"), "not a video file")
    assert "notes.mp4" in message and "mp4" in message.split(";")[-1]


def test_no_video_stream(tmp_path):
    pytest.importorskip("av")
    with wave.open(str(tmp_path / "song.wav"), "wb") as song:  # audio only
        song.setnchannels(1)
        song.setsampwidth(2)
        song.setframerate(8000)
        song.writeframes(np.zeros(8000, dtype=np.int16).tobytes())
    message = _one_line_error(lambda: open_video(tmp_path / "song.wav"), "has no video stream")
    assert "audio (pcm_s16le)" in message


def test_unsupported_codec(tmp_path):
    path = write_video(tmp_path / "clip.avi", moving_square(3), codec="mpeg4")
    data = path.read_bytes()
    assert data.count(b"FMP4") == 2  # the AVI stream header and format FourCCs
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))  # a codec no FFmpeg knows
    message = _one_line_error(lambda: open_video(path), "codec is not supported")
    assert "re-encode" in message


def test_missing_video_extra(seg, tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", moving_square(3))
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    hint = r"pip install 'vocaseg\[video\]'"
    _one_line_error(lambda: seg.segment_video(path), hint)
    _one_line_error(lambda: write_video_outputs(seg, moving_square(3), tmp_path / "o"), hint)
    assert not (tmp_path / "o").exists()


def test_missing_path_and_mixed_frame_sizes(tmp_path):
    _one_line_error(lambda: open_video(tmp_path / "nowhere.mp4"), "video not found")
    Image.fromarray(moving_square(1)[0]).save(tmp_path / "f1.png")
    Image.fromarray(moving_square(1, height=32)[0]).save(tmp_path / "f2.png")
    source = open_video(tmp_path)
    _one_line_error(lambda: list(source.read()), "all frames of a video must have one size")


def test_bad_options(seg):
    frames = moving_square(2)
    for options, match in [
        ({"every": 0}, "every must be at least 1"),
        ({"batch_size": 0}, "batch size"),
        ({"start": 2.0, "end": 1.0}, "must come after start"),
        ({"smoothing": -1}, "smoothing"),
    ]:
        with pytest.raises(UserError, match=match):
            seg.segment_video(frames, **options)


def test_corrupt_frame_is_reported_and_the_rest_kept(seg, tmp_path):
    path = write_video(tmp_path / "clip.avi", moving_square(10), codec="png", pix_fmt="rgb24")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data)) if data[i : i + 4] == b"\x89PNG"]
    assert len(starts) == 10  # one PNG per frame
    data[starts[5] : starts[5] + 4] = bytes(4)  # break frame 5's PNG signature
    path.write_bytes(bytes(data))
    video = seg.segment_video(path)
    with pytest.warns(VocasegWarning, match="clip.avi: a frame after 0.160 s could not be decoded"):
        times = [r.time for r in video]
    assert len(video.corrupt) == 1 and "after 0.160 s" in video.corrupt[0]
    assert times[:5] == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    assert times[-1] == pytest.approx(0.36)  # frames after the damage are kept
    with pytest.warns(VocasegWarning):
        summary = write_video_outputs(seg, path, tmp_path / "out", progress=False)
    assert summary["corrupt_frames"] == video.corrupt
    assert summary["frame_count"] == len(times)


def test_is_video_path(tmp_path):
    frames = [Image.fromarray(f) for f in moving_square(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "still.gif")
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert is_video_path(tmp_path / "anim.gif") and is_video_path(tmp_path / "clip.mp4")
    assert not is_video_path(tmp_path / "still.gif") and not is_video_path(tmp_path / "a.png")


def test_start_past_the_end_of_a_file(seg, tmp_path):
    path = write_video(tmp_path / "clip.mp4", moving_square(5))
    message = _one_line_error(lambda: seg.segment_video(path, start=3.0), "past the end")
    assert "0.20 s long" in message
