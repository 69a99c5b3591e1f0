"""ONNX export: ONNX Runtime matches PyTorch on a tiny MaskCLIP (other batch sizes and vocabulary
sizes than traced), the sidecar files, the CLI, and one-line errors for bad input."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli
from vocaseg.errors import ConfigError, UserError
from vocaseg.export import export_onnx
from vocaseg.models.registry import create_model
from vocaseg.text.vocab import Vocabulary

onnx = pytest.importorskip("onnx")

FAST = ["--set", "templates=single"]
TAGCLIP_TINY = Path(__file__).parent / "models" / "tagclip_tiny.yaml"


pytestmark = pytest.mark.usefixtures("offline_cache")


@pytest.fixture
def model(tiny_vit_clip):
    return create_model("maskclip", clip=tiny_vit_clip, templates="single").eval()


def _parity(model, path, text, size, batches=(1, 3)):
    """ONNX Runtime vs PyTorch for the exported text and other embeddings of the same shape."""
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.randn(text.shape)
    for batch, queries in zip(batches, (torch.as_tensor(text), other)):
        images = torch.randn(batch, 3, *size)
        (got,) = session.run(None, {"images": images.numpy(), "text": queries.numpy()})
        with torch.no_grad():
            want = model(images, queries)
        assert got.shape == tuple(want.shape) and got.shape[:2] == (batch, len(text))
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)


def test_onnx_runtime_matches_pytorch(model, tmp_path):
    vocab = Vocabulary.parse("cat, sofa; couch, floor")
    path = tmp_path / "tiny.onnx"
    record = export_onnx(model, vocab, path, size=(48, 64))
    text = np.load(tmp_path / "tiny.text.npy")
    assert text.shape == (4, 32)  # one row per query: sofa and couch apart
    assert np.allclose(text, model.encode_vocabulary(vocab).numpy())
    assert record["input_size"] == [48, 64]
    assert not model.training  # export leaves the model in eval mode
    torch.manual_seed(1)
    _parity(model, path, text, (48, 64))


def test_tagclip_with_trusty_learner_exports(tmp_path):
    torch.manual_seed(0)
    model = create_model("tagclip", config=TAGCLIP_TINY).eval()
    vocab = Vocabulary(Vocabulary.parse("cat, dog, sofa").classes, seen=(0, 1))
    path = tmp_path / "tag.onnx"
    export_onnx(model, vocab, path)  # nn.MultiheadAttention: its fused kernel has no ONNX form
    text = np.load(tmp_path / "tag.text.npy")
    assert text.shape == (4, 32)  # three classes and the trusty token
    _parity(model, path, text, (64, 64))


def test_graph_checks_and_infers_shapes(model, tmp_path):
    path = tmp_path / "tiny.onnx"
    export_onnx(model, Vocabulary.parse("a, b"), path, size=(32, 32), opset=17)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    onnx.checker.check_model(graph)
    dims = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*graph.graph.input, *graph.graph.output]
    }
    assert dims["images"] == ["batch", 3, 32, 32] and dims["text"] == [2, 32]
    assert dims["logits"][:2] == ["batch", 2]


def test_cli_writes_onnx_text_and_record(capsys, tiny_vit_clip, tmp_path):
    weights = tmp_path / "tiny_clip.pt"
    torch.save(tiny_vit_clip.state_dict(), weights)
    classes = tmp_path / "classes.txt"
    classes.write_text("background\ncat\nsofa; couch\n")
    out = tmp_path / "export" / "seg.onnx"
    code, stdout, _ = run_cli(
        capsys, "export", "--weights", weights, "--classes-file", classes, "-o", out, *FAST
    )
    assert code == 0 and "224x224" in stdout
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == "maskclip" and record["input_size"] == [224, 224]
    assert record["class_names"] == ["background", "cat", "sofa"]
    assert record["query_to_class"] == [0, 1, 2, 2]
    assert record["config"]["templates"] == "single" and record["preprocess"]["window"] == 224
    assert np.load(out.parent / "seg.text.npy").shape == (4, 32)
    onnx.checker.check_model(str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.json", "seg.onnx", "seg.text.npy"]


def test_bad_size_and_missing_onnx_are_user_errors(model, tmp_path, monkeypatch):
    vocab = Vocabulary.parse("a")
    with pytest.raises(ConfigError, match="multiples of 16"):
        export_onnx(model, vocab, tmp_path / "x.onnx", size=(40, 32))
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(UserError, match=r'pip install "vocaseg\[onnx\]"'):
        export_onnx(model, vocab, tmp_path / "x.onnx")
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--classes", "a", "--size", "40", "32"], ["40x32", "multiples of 16"]),
        (["--classes", " , "], ["empty"]),
        (["--classes", "a", "--model", "nope"], ["unknown model"]),
        (["--classes", "a", "--opset", "9"], ["--opset 9"]),
        (["--classes", "a", "--format", "tflite"], ["tflite"]),
        (["--classes-file", "missing.txt"], ["missing.txt"]),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tiny_vit_clip, tmp_path, extra, fragments):
    weights = tmp_path / "tiny_clip.pt"
    torch.save(tiny_vit_clip.state_dict(), weights)
    argv = ["export", "--weights", weights, "-o", tmp_path / "m.onnx", *FAST, *extra]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "m.onnx").exists()
