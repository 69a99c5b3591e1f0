"""Temporal smoothing of per-frame class scores: a causal moving average over the last N frames.

Frame-wise segmentation flickers where two classes score alike, because small changes between
frames (sensor noise, compression) flip the argmax. Averaging each pixel's class scores over the
current and the N-1 previous frames damps those flips without looking at future frames, so a
stream can be segmented as it arrives. Objects that move leave a trail of at most N-1 frames.
"""

from __future__ import annotations

from collections import deque

from torch import Tensor


class TemporalSmoother:
    """Mean of the last ``window`` score maps [K, H, W] (the current one included).

    The running sum is kept in float64, so a static video (identical scores every frame) gets back
    exactly the scores it put in: n * x and n * x - x are exact for float32 x in float64 (n < 2^29).
    Call :meth:`reset` between videos.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 frame, got {window}")
        self.window = window
        self._history: deque[Tensor] = deque()
        self._sum: Tensor | None = None

    def __call__(self, scores: Tensor) -> Tensor:
        """Smoothed scores [K, H, W] float32 for this frame's ``scores`` [K, H, W]."""
        if self._sum is not None and self._sum.shape != scores.shape:
            self.reset()  # new vocabulary or frame size: nothing to average with
        if self.window == 1:
            return scores.float()
        current = scores.float()  # kept as float32; adding/subtracting it in float64 is exact
        self._sum = current.double() if self._sum is None else self._sum + current
        self._history.append(current)
        if len(self._history) > self.window:
            self._sum -= self._history.popleft()
        return (self._sum / len(self._history)).float()

    def reset(self) -> None:
        self._history.clear()
        self._sum = None
