"""Interrupting a training run in tests: the crash half of the resume-is-bit-identical tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from vocaseg.engine.trainer import Trainer


@contextmanager
def crash_during_step(step: int) -> Iterator[None]:
    """Inside the block, a ``Trainer`` dies (``KeyboardInterrupt``, as a kill would end it: no
    checkpoint of its own) during its ``step``-th optimiser step; the block expects that."""
    original, calls = Trainer._optimizer_step, {"n": 0}

    def crashing(self, micro):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self, micro)

    Trainer._optimizer_step = crashing
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        Trainer._optimizer_step = original
