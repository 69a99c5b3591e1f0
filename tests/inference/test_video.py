"""Segmenter.segment_video: frame i's labels equal segmenting frame i as an image for every source
(mp4, lossless mkv, mov, webm, avi, GIF, frame folder, arrays without PyAV), ``every`` reuse,
the start/end range, and temporal smoothing (causal, exact on a static video, VC8 up on noise)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inference.video_helpers import decode, moving_square, tiny_segmenter, write_video
from vocaseg.inference.smoothing import TemporalSmoother
from vocaseg.inference.video import VideoFrameResult
from vocaseg.metrics import VideoConsistency


@pytest.fixture
def seg(tiny_vit_clip):
    return tiny_segmenter(tiny_vit_clip)


def _labels_as_images(seg, frames):
    return [seg(frame).label for frame in frames]


def test_mp4_frames_match_image_segmentation(seg, tmp_path):
    path = write_video(tmp_path / "clip.mp4", moving_square(12), audio=True)
    video = seg.segment_video(path, batch_size=5)
    assert (video.info.width, video.info.height, video.info.fps) == (64, 48, 25.0)
    assert video.info.frame_count == 12 and video.expected_frames == 12
    assert video.info.codec == "h264" and video.info.dropped == ("audio (aac)",)
    results = list(video)
    decoded = decode(path)  # lossy H.264: compare with the frames as decoded, not as generated
    assert [r.index for r in results] == list(range(12))
    assert [r.time for r in results] == pytest.approx([i / 25 for i in range(12)])
    for result, frame, label in zip(results, decoded, _labels_as_images(seg, decoded)):
        assert isinstance(result, VideoFrameResult) and result.segmented
        assert np.array_equal(result.image, frame)
        assert np.array_equal(result.label, label)
        assert result.areas.sum() == pytest.approx(1.0)


def test_lossless_mkv_matches_the_generated_frames(seg, tmp_path):
    frames = moving_square(8)
    path = write_video(tmp_path / "clip.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    video = seg.segment_video(path)
    assert video.info.frame_count is None and video.expected_frames == 8  # from the duration
    labels = [r.label for r in video]
    assert len(labels) == 8
    for label, expected in zip(labels, _labels_as_images(seg, frames)):
        assert np.array_equal(label, expected)


@pytest.mark.parametrize(
    ("name", "codec"), [("clip.mov", "libx264"), ("clip.webm", "libvpx-vp9"), ("clip.avi", "mpeg4")]
)
def test_other_containers(seg, tmp_path, name, codec):
    path = write_video(tmp_path / name, moving_square(6), rate=10, codec=codec)
    results = list(seg.segment_video(path))
    assert len(results) == 6 and results[0].label.shape == (48, 64)
    assert results[-1].time == pytest.approx(0.5)


def test_animated_gif(seg, tmp_path):
    frames = [Image.fromarray(f) for f in moving_square(6)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    with Image.open(tmp_path / "a.gif") as gif:  # GIF quantises colours: compare decoded frames
        decoded = []
        for i in range(gif.n_frames):
            gif.seek(i)
            decoded.append(np.asarray(gif.convert("RGB")))
    video = seg.segment_video(tmp_path / "a.gif")
    assert video.info.fps == 25.0 and video.info.frame_count == 6
    results = list(video)
    assert [r.time for r in results] == pytest.approx([0.04 * i for i in range(6)])
    for result, label in zip(results, _labels_as_images(seg, decoded)):
        assert np.array_equal(result.label, label)


def test_folder_of_numbered_frames_in_natural_order(seg, tmp_path):
    frames = moving_square(11)
    for i, frame in enumerate(frames):  # frame2.png must come before frame10.png
        Image.fromarray(frame).save(tmp_path / f"frame{i}.png")
    video = seg.segment_video(tmp_path, fps=5)
    assert video.info.fps == 5.0 and not video.info.fps_assumed
    results = list(video)
    assert [r.time for r in results] == pytest.approx([i / 5 for i in range(11)])
    for result, frame, label in zip(results, frames, _labels_as_images(seg, frames)):
        assert np.array_equal(result.image, frame) and np.array_equal(result.label, label)


def test_arrays_gifs_and_folders_work_without_pyav(seg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    frames = moving_square(5)
    gif = [Image.fromarray(f) for f in frames]
    gif[0].save(tmp_path / "a.gif", save_all=True, append_images=gif[1:], duration=40)
    assert len(list(seg.segment_video(tmp_path / "a.gif"))) == 5
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{i}.png")
    assert len(list(seg.segment_video(tmp_path / "frames"))) == 5
    video = seg.segment_video(np.stack(frames))  # [T, H, W, 3]
    assert video.info.fps_assumed and video.info.fps == 25.0
    labels = [r.label for r in video]
    assert all(np.array_equal(a, b) for a, b in zip(labels, _labels_as_images(seg, frames)))
    lazily = seg.segment_video(iter(frames), batch_size=2)  # a generator: length unknown
    assert lazily.expected_frames is None and len(list(lazily)) == 5


def test_every_n_reuses_the_last_labels(seg):
    frames = moving_square(10)
    reference = _labels_as_images(seg, frames)
    results = list(seg.segment_video(frames, every=3, batch_size=2))
    assert [r.segmented for r in results] == [i % 3 == 0 for i in range(10)]
    for i, result in enumerate(results):
        assert np.array_equal(result.image, frames[i])
        assert np.array_equal(result.label, reference[i - i % 3])
    assert not np.array_equal(reference[1], reference[0])  # reuse is visible on this video


def test_start_end_select_a_time_range(seg, tmp_path):
    frames = moving_square(20)
    results = list(seg.segment_video(frames, fps=10, start=0.5, end=1.2))
    assert [r.time for r in results] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    assert [r.index for r in results] == list(range(7))
    for result, label in zip(results, _labels_as_images(seg, frames[5:12])):
        assert np.array_equal(result.label, label)
    path = write_video(tmp_path / "clip.mp4", frames)  # seek in a file: frames 8..14 at 25 fps
    video = seg.segment_video(path, start=0.32, end=0.6)
    assert video.expected_frames == 7
    results = list(video)
    decoded = decode(path)[8:15]
    assert [r.time for r in results] == pytest.approx([i / 25 for i in range(8, 15)])
    for result, label in zip(results, _labels_as_images(seg, decoded)):
        assert np.array_equal(result.label, label)


def test_smoother_is_a_causal_mean_of_the_last_frames():
    torch.manual_seed(0)
    maps = [torch.rand(3, 4, 5) for _ in range(6)]
    smoother = TemporalSmoother(3)
    for t, scores in enumerate(maps):
        expected = torch.stack(maps[max(0, t - 2) : t + 1]).mean(dim=0)
        assert torch.allclose(smoother(scores), expected, atol=1e-6)


def test_smoothing_leaves_a_static_video_unchanged(seg):
    frames = [moving_square(1)[0]] * 9
    plain = seg(frames[0])
    for result in seg.segment_video(frames, smoothing=4, batch_size=1):
        assert torch.equal(result.scores, plain.scores)  # bit for bit
        assert np.array_equal(result.label, plain.label)
    # in batches of 4 the scores differ in the last bits between batch positions; labels hold
    for result in seg.segment_video(frames, smoothing=4, batch_size=4):
        assert np.array_equal(result.label, plain.label)


def test_smoothing_raises_video_consistency_on_a_noisy_video(seg):
    base = moving_square(1)[0]
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 60.0, size=(24, *base.shape))  # independent per frame
    noisy = list(np.clip(base + noise, 0, 255).astype(np.uint8))
    clean = seg(base).label
    gts = [np.zeros_like(clean)] * len(noisy)  # one static scene: VC8 = share of stable pixels
    scores = {}
    for window in (0, 4):
        labels = [r.label for r in seg.segment_video(noisy, smoothing=window)]
        vc = VideoConsistency(8)
        vc.update(labels, gts)
        agreement = np.mean([np.mean(label == clean) for label in labels[4:]])
        scores[window] = (vc.value, agreement)
    assert scores[4][0] > scores[0][0] + 10  # measured: 27.0 -> 69.6
    assert scores[4][1] > scores[0][1]  # closer to the noise-free labels, not just constant


def test_smoothing_uses_no_future_frames(seg):
    rng = np.random.default_rng(1)
    frames = list(rng.integers(0, 256, size=(8, 48, 64, 3), dtype=np.uint8))
    full = list(seg.segment_video(frames, smoothing=3, batch_size=3))
    prefix = list(seg.segment_video(frames[:5], smoothing=3, batch_size=3))
    for a, b in zip(prefix, full):
        assert torch.equal(a.scores, b.scores)
    assert not torch.equal(full[1].scores, seg(frames[1]).scores)  # smoothing did act
