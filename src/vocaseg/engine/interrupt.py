"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM.

The handlers only record the signal; the trainer looks at the record between optimiser steps, so
the step in flight completes, every process agrees on the step to stop at, a checkpoint of that
step is written and :class:`TrainingInterrupted` ends the run (``--resume auto`` continues it
exactly). A second signal stops at once (``KeyboardInterrupt``), keeping the checkpoints written
so far. DataLoader workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group), so
they keep serving the step in flight.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving a checkpoint; ``exit_code`` is 128 + the signal."""

    def __init__(self, signal_name: str, exit_code: int, step: int, checkpoint: Path | None):
        where = f"saved {checkpoint}" if checkpoint is not None else "no checkpoint written"
        super().__init__(
            f"interrupted ({signal_name}) at step {step}; {where}; to continue, run the same "
            "command with --resume auto"
        )
        self.signal_name, self.exit_code = signal_name, exit_code
        self.step, self.checkpoint = step, checkpoint


class StopRequest:
    """The first stop signal received (``None`` until one arrives)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals(announce: bool = True) -> Iterator[StopRequest]:
    """Record SIGINT/SIGTERM in the yielded :class:`StopRequest` instead of raising.

    Outside the main thread (where Python cannot set handlers) nothing is installed. ``announce``
    prints one line when the first signal arrives (rank 0 only under torchrun).
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: object) -> None:
        if request.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        request.signal = signum
        if announce:
            _write_raw(
                f"\n{signal.Signals(signum).name}: stopping after this step to save a "
                "checkpoint (press Ctrl-C again to stop at once, without it)\n"
            )

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave SIGINT to the main process, SIGTERM at its default."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _write_raw(text: str) -> None:
    """Write from a signal handler: one system call, never re-entering a buffered stream."""
    with suppress(OSError, ValueError, AttributeError):  # no real stderr (captured, closed)
        os.write(sys.stderr.fileno(), text.encode())
