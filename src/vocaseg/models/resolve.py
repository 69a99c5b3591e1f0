"""The one model resolver behind ``segment``, ``eval``, ``bench``, ``export``, ``demo`` and
``Segmenter.from_pretrained``: a method name plus weights, or a model folder, resolved alike.

``model`` is a registered method name or a model folder. ``weights`` means the same everywhere:

- a model folder (a trained or converted method; with a method name it must hold that method);
- CLIP weights: a known name (``ViT-B/16``) or a checkpoint file, for a training-free method, or
  for a model folder whose own CLIP reference cannot be found (a moved file);
- ``random``: random weights, on purpose (tests, benchmarks); results record
  ``"clip_weights": "random"``;
- nothing: the method's own CLIP weights (downloaded on first use) or the folder's reference.

A method that must be trained (TagCLIP, ZegCLIP, GKC, ZeroSeg) is refused without a model folder
unless ``weights`` is ``random``: its heads would be random and its segmentation meaningless.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vocaseg.errors import UserError
from vocaseg.models.base import SegmentationModel
from vocaseg.models.folder import load_model
from vocaseg.models.registry import create_model, get_entry
from vocaseg.models.towers import RANDOM
from vocaseg.models.weights import MODEL_JSON, read_model_record


def is_model_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / MODEL_JSON).is_file()


def resolve_model(
    model: str | os.PathLike = "maskclip",
    weights: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
) -> SegmentationModel:
    """A model ready for inference (eval mode, on ``device``); see the module docstring."""
    overrides = dict(overrides or {})
    if Path(model).is_dir():
        if not is_model_folder(model):
            raise UserError(
                f"{model} is a folder without {MODEL_JSON}; pass a model folder written by "
                "'vocaseg train' (its final/) or 'vocaseg convert', or a method name"
            )
        if weights is not None and is_model_folder(weights):
            raise UserError(f"--model {model} is already a model folder; drop --weights {weights}")
        return load_model(model, device, clip_weights=weights, **overrides)
    name = str(model)
    entry = get_entry(name)
    if weights is not None and Path(weights).is_dir():
        if not is_model_folder(weights):
            raise UserError(
                f"--weights {weights} is a folder without {MODEL_JSON}; pass a model folder "
                "written by 'vocaseg train' or 'vocaseg convert', or CLIP weights (a file)"
            )
        method = read_model_record(weights)["method"]  # before the settings are checked
        if method != name:
            raise UserError(
                f"--weights {weights} holds a {method!r} model, not {name!r}; pass "
                f"--model {method} or --model {weights}"
            )
        return load_model(weights, device, **overrides)
    if entry.trained and str(weights) != RANDOM:
        raise UserError(
            f"{name} must be trained before it can segment: pass its model folder (--model "
            f"runs/<run>/final from 'vocaseg train', or one made by 'vocaseg convert'), or "
            "--weights random for a smoke test on random weights"
        )
    pretrained: bool | str = True if weights is None else str(weights)
    # Settings go in as a config mapping: a setting named like a keyword (clip) stays a setting.
    return create_model(name, overrides, pretrained=pretrained).to(device).eval()
