"""``vocaseg demo``: one line without Gradio, 127.0.0.1 by default, the model built once from the
same options as ``vocaseg segment`` (the server itself is exercised by the browser test)."""

from __future__ import annotations

import sys

import pytest

from cli_helpers import run_cli
from vocaseg.cli.main import build_parser

pytestmark = pytest.mark.usefixtures("offline_cache")


def test_without_gradio_says_how_to_install(capsys, monkeypatch, tiny_clip_file):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    code, out, err = run_cli(capsys, "demo", "--weights", tiny_clip_file)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'vocaseg[demo]'" in lines[0], err


def test_binds_localhost_by_default():
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert not hasattr(args, "share")  # no public link, not even as an option


def test_loads_the_model_and_serves(capsys, monkeypatch, tiny_clip_file):
    pytest.importorskip("gradio", reason="the demo needs Gradio")
    import vocaseg.demo.app as demo_app

    served = {}

    def fake_launch(app, host, port):
        served.update(app=app, host=host, port=port)
        app.block_thread = lambda: served.update(blocked=True)  # instead of serving until Ctrl+C
        return f"http://{host}:{port}/"

    monkeypatch.setattr(demo_app, "launch", fake_launch)
    code, out, err = run_cli(
        capsys, "demo", "--weights", tiny_clip_file, "--set", "short_side=48", "--port", "7999"
    )
    assert code == 0, err
    assert (served["host"], served["port"], served["blocked"]) == ("127.0.0.1", 7999, True)
    assert "http://127.0.0.1:7999/" in out
    labels = [getattr(b, "label", None) for b in served["app"].blocks.values()]
    assert "Classes" in labels


def test_missing_weights_is_one_line(capsys, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs Gradio")
    code, _, err = run_cli(capsys, "demo", "--weights", tmp_path / "nope.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nope.pt" in err, err


def test_missing_example_is_one_line(capsys, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs Gradio")
    code, _, err = run_cli(capsys, "demo", "--example", tmp_path / "cat.jpg")
    assert code == 2 and "example image not found" in err and "cat.jpg" in err, err
