"""Pure-PyTorch CLIP: ViT and ModifiedResNet image towers, the text transformer, the original BPE
tokenizer, and loading of OpenAI, open_clip and Hugging Face checkpoints (Radford et al., 2021).

Public: ``load(source)``, ``build(name_or_config)``, ``tokenize(texts)``, ``CLIP``, ``CLIPConfig``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CLIP": "vocaseg.clip.model",
    "CLIPConfig": "vocaseg.clip.model",
    "build": "vocaseg.clip.weights",
    "load": "vocaseg.clip.weights",
    "tokenize": "vocaseg.clip.tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vocaseg.clip' has no attribute {name!r}")
