"""The demo page as built by ``build_app`` (Gradio, no browser): its widgets, the preloaded photo,
one shared queue slot, the video tab only with PyAV, and the Segment event's function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocaseg.inference.segmenter import Segmenter

gr = pytest.importorskip("gradio", reason="the demo needs Gradio (pip install 'vocaseg[demo]')")

from vocaseg.demo import build_app  # noqa: E402 (needs Gradio)

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "chelsea.png"


@pytest.fixture
def segmenter(tiny_clip_file) -> Segmenter:
    return Segmenter.from_pretrained(
        "maskclip", weights=tiny_clip_file, short_side=48, window=0, templates="single"
    )


def _components(app, kind):
    return [b for b in app.blocks.values() if isinstance(b, kind)]


def test_page_has_the_widgets_and_loads_nothing(segmenter):
    app = build_app(segmenter)
    assert isinstance(app, gr.Blocks)
    assert segmenter.vocabulary is None  # no request ran, no vocabulary was encoded
    assert [t.value for t in _components(app, gr.Textbox) if t.label == "Classes"]
    buttons = [b.value for b in _components(app, gr.Button)]
    assert "Segment" in buttons
    image = next(i for i in _components(app, gr.Image) if i.label == "Image")
    assert image.value["orig_name"] == PHOTO.name  # the bundled photo, preloaded
    slider = next(s for s in _components(app, gr.Slider))
    assert (slider.minimum, slider.maximum, slider.value) == (0.0, 1.0, 0.0)
    # image and video requests share one slot: one request at a time, whatever the tab
    handlers = [fn for fn in app.fns.values() if fn.api_name in ("segment", "segment_video")]
    assert handlers and {(fn.concurrency_limit, fn.concurrency_id) for fn in handlers} == {
        (1, "model")
    }


def test_video_tab_only_with_pyav(segmenter, monkeypatch):
    import vocaseg.demo.app as demo_app

    monkeypatch.setattr(demo_app, "video_available", lambda: False)
    buttons = [b.value for b in _components(build_app(segmenter, examples=[]), gr.Button)]
    assert "Segment video" not in buttons
    monkeypatch.setattr(demo_app, "video_available", lambda: True)
    assert "Segment video" in [b.value for b in _components(build_app(segmenter), gr.Button)]


def test_segment_event_matches_segmenter(segmenter, tmp_path):
    """The Segment event's function, given a file payload as the page sends it."""
    path = tmp_path / "cat.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)).save(path)
    app = build_app(segmenter, examples=[])
    fn = next(fn for fn in app.fns.values() if fn.api_name == "segment")
    payload = {"path": str(path), "orig_name": "cat.png", "meta": {"_type": "gradio.FileData"}}
    overlay, table, label_file, json_file, message = fn.fn(payload, "cat, dog", 0.0, "whole image")
    assert message.startswith("Segmented cat.png (52x36)")
    assert overlay.width > 52 and overlay.height >= 36
    segmenter.set_vocabulary("cat, dog")
    assert np.array_equal(np.array(Image.open(label_file)), segmenter(path).label)
    assert [row[0] for row in table] == ["cat", "dog"] and Path(json_file).is_file()
    *_, message = fn.fn(payload, "", 0.0, "whole image")
    assert message.startswith("Error: the Classes box is empty")


def test_busy_port_is_a_user_error(segmenter):
    import socket

    from vocaseg.demo import launch
    from vocaseg.errors import UserError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        app = build_app(segmenter, examples=[])
        with pytest.raises(UserError, match=f"cannot serve on 127.0.0.1:{port}.*--port"):
            launch(app, port=port)


def test_request_folders_are_pruned_after_an_hour(tmp_path):
    import os
    import time

    from vocaseg.demo.app import KEEP_SECONDS, request_folder

    old, recent = request_folder(tmp_path), request_folder(tmp_path)
    (old / "cat_label.png").write_bytes(b"png")
    stale = time.time() - KEEP_SECONDS - 60
    os.utime(old, (stale, stale))
    new = request_folder(tmp_path)
    assert not old.exists() and recent.is_dir() and new.is_dir() and new != recent
