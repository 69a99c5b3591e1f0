"""A local web demo of vocaseg (``vocaseg demo``; needs the ``[demo]`` extra, i.e. Gradio).

``build_app(segmenter, examples=...)`` returns the Gradio Blocks page for a loaded
:class:`vocaseg.Segmenter` (mount it elsewhere, or serve it with ``launch``); the request handlers
in :mod:`vocaseg.demo.handlers` need no Gradio. Importing this package does not import Gradio.
"""

from __future__ import annotations

import importlib
from typing import Any

from vocaseg.demo.handlers import MAX_CLASSES, DemoSettings, apply_settings

_LAZY = {"build_app": "vocaseg.demo.app", "launch": "vocaseg.demo.app"}

__all__ = ["MAX_CLASSES", "DemoSettings", "apply_settings", "build_app", "launch"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vocaseg.demo' has no attribute {name!r}")
