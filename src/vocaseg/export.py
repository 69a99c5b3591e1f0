"""ONNX export of a method's image path (``vocaseg export``); text embeddings are an input.

The graph is ``model.forward``: normalised images [B, 3, H, W] and text embeddings [Q, D] in, dense
logits [B, Q, h, w] out, with the batch B dynamic and H, W and Q fixed: the CLIP positional table is
resized for one input size when traced, and methods whose queries attend to each other (TagCLIP's
trusty learner, ``nn.MultiheadAttention``) trace their query count as a constant. Another
vocabulary of the same size can reuse the graph with its own embeddings. Beside ``OUT.onnx`` go

- ``OUT.text.npy``: the vocabulary's encoded text embeddings [Q, D] float32, so a deployment runs
  without the text encoder;
- ``OUT.json``: method, config, preprocess (mean/std on the 0-255 scale, resize rule, windows), input
  size, class names and ``query_to_class``, and what the graph leaves to the caller (resizing and
  normalising, windows, upsampling, ``window_output``/``finalize``: e.g. softmax and the max over
  each class's synonyms for MaskCLIP).

Exported with PyTorch's TorchScript-based exporter (``dynamo=False``): the default torch.export-based
one needs the extra ``onnxscript`` package and gains nothing for these static graphs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vocaseg.errors import ConfigError, UserError
from vocaseg.io import atomic_open, atomic_path, write_json
from vocaseg.models.base import SegmentationModel
from vocaseg.text.vocab import Vocabulary

INPUT_NAMES = ["images", "text"]
OUTPUT_NAMES = ["logits"]
DYNAMIC_AXES = {"images": {0: "batch"}, "logits": {0: "batch"}}


class ImagePath(nn.Module):
    """``model.forward`` as a module of two tensors, the graph that is exported."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        return self.model(images, text)


@contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """Trace ``nn.MultiheadAttention`` as plain ops: its fused inference kernel has no ONNX form."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UserError(
            'ONNX export needs the onnx package; install it with pip install "vocaseg[onnx]"'
        ) from None
    return onnx


def default_size(model: SegmentationModel) -> tuple[int, int]:
    """The input the model sees in use: its window, else a square of its short side."""
    pre = model.preprocess
    side = pre.window or pre.short_side
    if side is None:
        raise ConfigError(f"{model.name} has no fixed input size; pass --size H W")
    side = -(-side // pre.size_divisor) * pre.size_divisor  # round up to the divisor
    return side, side


def sidecar_paths(path: str | Path) -> tuple[Path, Path]:
    """``OUT.json`` and ``OUT.text.npy`` beside ``OUT.onnx``."""
    path = Path(path)
    return path.with_suffix(".json"), path.with_suffix(".text.npy")


def export_onnx(
    model: SegmentationModel,
    vocabulary: Vocabulary,
    path: str | Path,
    size: tuple[int, int] | None = None,
    opset: int = 17,
) -> dict[str, Any]:
    """Write ``path`` (ONNX), its ``.json`` record and ``.text.npy`` embeddings; return the record.

    ``size`` (H, W) defaults to :func:`default_size`; both must be multiples of the model's
    ``preprocess.size_divisor`` (e.g. the ViT patch size). The model is moved to the CPU in float32.
    """
    onnx = require_onnx()
    model = model.cpu().float().eval()
    pre = model.preprocess
    height, width = size or default_size(model)
    divisor = pre.size_divisor
    if height < 1 or width < 1 or height % divisor or width % divisor:
        raise ConfigError(
            f"export size {height}x{width} must be positive multiples of {divisor} for "
            f"{model.name}; e.g. --size {max(divisor, height // divisor * divisor)} "
            f"{max(divisor, width // divisor * divisor)}"
        )
    path = Path(path)
    json_path, text_path = sidecar_paths(path)
    vocabulary = model.background.prepare(vocabulary)
    scored = model.background.scored_vocabulary(vocabulary)
    with torch.no_grad():
        text = model.text_for(vocabulary).float().cpu()  # [Q, D]
    images = torch.zeros(1, 3, height, width)
    quiet = warnings.catch_warnings()
    with torch.no_grad(), _mha_fastpath_off(), quiet, atomic_path(path) as tmp:
        # The legacy exporter's deprecation notice and the tracer's note that the positional table
        # is resized for this one size (the fixed H, W recorded below).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            ImagePath(model).eval(),  # a new module is in train mode; export restores it
            (images, text),
            str(tmp),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=DYNAMIC_AXES,
            opset_version=opset,
            dynamo=False,
        )
        onnx.checker.check_model(str(tmp))
    with atomic_open(text_path, "wb") as handle:
        np.save(handle, text.numpy())
    record = {
        "format": "onnx",
        "opset": opset,
        "method": model.name,
        "config": model.config_dict(),
        "clip": model.clip_source,
        "background": model.background.record(),
        "preprocess": asdict(model.preprocess),
        "input_size": [height, width],
        "inputs": {
            "images": f"float32 [batch, 3, {height}, {width}], normalised with preprocess.mean/std "
            "(0-255 scale)",
            "text": f"float32 [{text.shape[0]}, {text.shape[1]}], e.g. {text_path.name}",
        },
        "outputs": {"logits": f"float32 [batch, {text.shape[0]}, h, w], the dense logits"},
        "postprocess": "upsample the logits to the input size, then the method's window_output "
        "and finalize (not in the graph): class scores, argmax = label",
        "text_embeddings": text_path.name,
        "class_names": vocabulary.class_names,
        "classes": [list(names) for names in vocabulary.classes],
        "queries": scored.queries,
        "query_to_class": scored.query_to_class,
        "seen": None if vocabulary.seen is None else list(vocabulary.seen),
    }
    write_json(json_path, record)
    return record
