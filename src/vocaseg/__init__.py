"""vocaseg: open-vocabulary semantic segmentation on one pure-PyTorch CLIP core.

Methods: GKC, ZeroSeg, TagCLIP/ZegCLIP and the training-free MaskCLIP baseline. Public entry points
(stable): ``vocaseg.clip.load``, ``vocaseg.clip.tokenize``, ``list_models``, ``create_model``,
``load_model``, ``Segmenter`` and ``vocaseg.metrics``. Heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "list_models": "vocaseg.models.registry",
    "create_model": "vocaseg.models.registry",
    "load_model": "vocaseg.models.folder",
    "Segmenter": "vocaseg.inference.segmenter",
}
_SUBMODULES = {"clip", "text", "models", "data", "metrics", "engine", "inference", "viz", "losses"}

__all__ = ["Segmenter", "__version__", "create_model", "list_models", "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"vocaseg.{name}")
    raise AttributeError(f"module 'vocaseg' has no attribute {name!r}")
