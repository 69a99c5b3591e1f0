"""write_video_outputs: the overlay video keeps frame count, size and rate; the label archive holds
frame i's labels as segmenting frame i as an image; JSON areas sum to 1 per frame; odd sizes,
the mpeg4 fallback, ``every`` + range, and an interrupted run that leaves no file behind."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vocaseg.io
from inference.video_helpers import decode, moving_square, tiny_segmenter, write_video
from vocaseg.errors import VideoError
from vocaseg.inference import video_write
from vocaseg.inference.video_outputs import output_paths, write_video_outputs
from vocaseg.inference.video_write import draw_legend_inside, read_label_archive
from vocaseg.viz import make_palette, overlay

av = pytest.importorskip("av")


@pytest.fixture
def seg(tiny_vit_clip):
    return tiny_segmenter(tiny_vit_clip)


def _stream(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.width, stream.height, stream.average_rate, stream.codec_context.name


def test_outputs_of_a_generated_mp4(seg, tmp_path):
    source = write_video(tmp_path / "clip.mp4", moving_square(13), audio=True)
    out = tmp_path / "out"
    summary = write_video_outputs(seg, source, out, batch_size=4, progress=False)
    paths = output_paths(out, "clip")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    assert _stream(paths["overlay"]) == (13, 64, 48, 25, "h264")

    labels = read_label_archive(paths["labels"])
    decoded = decode(source)
    assert len(labels) == 13
    for label, frame in zip(labels, decoded):
        assert np.array_equal(label, seg(frame).label)
    with zipfile.ZipFile(paths["labels"]) as archive, archive.open("000000.png") as png:
        assert png.read(4) == b"\x89PNG"

    record = json.loads(paths["json"].read_text())
    assert {k: record[k] for k in ("fps", "width", "height", "frame_count")} == {
        "fps": 25.0,
        "width": 64,
        "height": 48,
        "frame_count": 13,
    }
    assert record["overlay"]["codec"] == "h264" and record["dropped"] == ["audio (aac)"]
    assert any("audio" in note for note in record["notes"])
    assert len(record["frames"]) == 13
    per_frame = np.array([f["areas"] for f in record["frames"]])  # [T, K]
    assert per_frame.sum(axis=1) == pytest.approx(np.ones(13))
    for areas, label in zip(per_frame, labels):
        assert areas == pytest.approx(np.bincount(label.ravel(), minlength=3) / label.size)
    whole = [c["area"] for c in record["classes"]]
    assert whole == pytest.approx(per_frame.mean(axis=0)) and sum(whole) == pytest.approx(1.0)
    assert [c["names"] for c in record["classes"]] == [["cat"], ["sofa", "couch"], ["floor"]]
    assert summary == {k: v for k, v in record.items() if k != "frames"}


def test_every_and_range_in_the_outputs(seg, tmp_path):
    frames = moving_square(20)
    summary = write_video_outputs(
        seg, frames, tmp_path, "v", every=4, start=0.2, end=1.4, fps=10, progress=False
    )
    assert summary["frame_count"] == 12 and summary["every"] == 4
    assert _stream(tmp_path / "v_overlay.mp4")[0] == 12
    labels = read_label_archive(tmp_path / "v_labels.zip")
    for i, label in enumerate(labels):
        assert np.array_equal(label, seg(frames[2 + i - i % 4]).label)
    record = json.loads((tmp_path / "v.json").read_text())
    assert [f["segmented"] for f in record["frames"]] == [i % 4 == 0 for i in range(12)]
    assert record["frames"][0]["time"] == pytest.approx(0.2)


def test_odd_sizes_are_padded_in_the_overlay_only(seg, tmp_path):
    frames = moving_square(3, height=33, width=45)
    summary = write_video_outputs(seg, frames, tmp_path, "odd", progress=False)
    assert _stream(tmp_path / "odd_overlay.mp4")[1:3] == (46, 34)
    assert (summary["width"], summary["height"]) == (45, 33)
    assert read_label_archive(tmp_path / "odd_labels.zip")[0].shape == (33, 45)
    assert any("padded" in note for note in summary["notes"])


def test_mpeg4_when_libx264_is_missing(seg, tmp_path, monkeypatch):
    real = av.codec.Codec

    def no_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", no_x264)
    assert video_write.pick_encoder() == "mpeg4"
    summary = write_video_outputs(seg, moving_square(4), tmp_path, "m", progress=False)
    assert summary["overlay"]["codec"] == "mpeg4"
    assert _stream(tmp_path / "m_overlay.mp4")[0::4] == (4, "mpeg4")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_run_leaves_no_file(seg, tmp_path, monkeypatch, error):
    real_write = video_write.LabelArchiveWriter.write

    def failing_write(self, label):
        if self.count == 5:
            raise error("interrupted")
        real_write(self, label)

    monkeypatch.setattr(video_write.LabelArchiveWriter, "write", failing_write)
    with pytest.raises(error):
        write_video_outputs(seg, moving_square(9), tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # no outputs, no temporary files


def test_an_empty_range_writes_nothing(seg, tmp_path):
    with pytest.raises(VideoError, match="no frames"):
        write_video_outputs(seg, moving_square(5), tmp_path / "out", start=3.0, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_json_is_published_last(seg, tmp_path, monkeypatch):
    published = []
    real_replace = vocaseg.io.os.replace

    def replace(source, target):
        published.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(vocaseg.io.os, "replace", replace)
    write_video_outputs(seg, moving_square(3), tmp_path, "v", progress=False)
    assert published[-1] == "v.json" and sorted(published[:2]) == ["v_labels.zip", "v_overlay.mp4"]


def test_the_legend_is_drawn_inside_the_frame(seg):
    frame = moving_square(1, height=96, width=160)[0]
    result = seg(frame)
    colours = make_palette(3)
    plain = np.asarray(overlay(frame, result.label, result.class_names, 0.5, colours, legend=False))
    drawn = draw_legend_inside(Image.fromarray(plain), result.label, result.class_names, colours)
    changed = np.any(np.asarray(drawn) != plain, axis=-1)  # [H, W]
    assert drawn.size == (160, 96)
    rows, cols = np.nonzero(changed)
    present = int(np.count_nonzero(result.areas))
    assert rows.min() == 0 and cols.min() == 0  # a box from the top-left corner
    assert rows.max() < 8 + 20 * present + 8  # one row per class present
    assert cols.max() < 3 * 8 + 14 + 160 // 2  # margins, swatch, text cut to half the width


def test_smoothing_keeps_scores_a_segmenter_would_drop(seg, tmp_path, monkeypatch):
    """Scores too big to keep by default are still kept for smoothing, through every door."""
    from vocaseg.inference import segmenter as segmenter_module

    monkeypatch.setattr(segmenter_module, "KEEP_SCORES_ELEMENTS", 0)  # never kept by default
    summary = write_video_outputs(
        seg, moving_square(4), tmp_path / "o", smoothing=2, progress=False
    )
    assert summary["frame_count"] == 4
    assert seg.keep_scores is None  # the caller's segmenter is unchanged
