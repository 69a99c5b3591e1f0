"""Console streams that outlive their reader: ``vocaseg segment DIR 2>&1 | head`` must keep
segmenting (the files are the product), not stop at the first progress-bar update.

:func:`pipe_safe_streams` swaps ``sys.stdout`` and ``sys.stderr`` for wrappers that, once a write
meets a closed pipe, point the file descriptor at the null device and drop further text instead
of raising ``BrokenPipeError`` (Python ignores SIGPIPE, so every later write would raise, and the
interpreter's final flush would print an "Exception ignored" message).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class PipeSafeStream:
    """Wraps a text stream; after a broken pipe it silently drops what is written."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no file descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def pipe_safe_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as :class:`PipeSafeStream` s for the ``with`` block."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
