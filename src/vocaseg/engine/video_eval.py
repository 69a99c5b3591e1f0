"""Video evaluation for the evaluator (docs/datasets.md §5.4; the ``ov-video`` protocol).

A video dataset (a reader with ``.videos``: video -> frame indices, frames sorted by name) is scored
like an image dataset - one confusion matrix over every annotated frame - plus VSPW's video
consistency VC_n (``VSPW_baseline`` ``VC_perclip.py``, :func:`vocaseg.metrics.video_consistency`)
for n = 8 and 16, pooled over all windows of all videos.

Frames stream through :class:`VideoScorer` in order; it keeps only the last n + 1 frames per n, so
memory does not grow with the video or the dataset. :func:`shard_videos` gives every process whole
videos (balanced by frame count, no padding) so that no window is split between processes.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from vocaseg.data.imageio import read_label
from vocaseg.errors import DatasetError, UserError
from vocaseg.metrics import VideoConsistency

VC_WINDOWS = (8, 16)
VC_GT_MODES = ("raw", "mapped")


def shard_videos(
    videos: dict[str, list[int]], limit: int | None, rank: int, world: int
) -> tuple[list[str], list[int], int]:
    """(this process's videos, their frame indices in order, frames of all selected videos).

    The first ``limit`` videos are selected; each goes whole to the process with the fewest frames
    so far, longest videos first (ties by order), so every process computes the same assignment.
    """
    names = list(videos)[:limit]
    loads = [0] * world
    owner: dict[str, int] = {}
    for name in sorted(names, key=lambda v: -len(videos[v])):  # stable: ties keep dataset order
        target = loads.index(min(loads))
        owner[name] = target
        loads[target] += len(videos[name])
    mine = [name for name in names if owner[name] == rank]
    frames = [index for name in mine for index in videos[name]]
    return mine, frames, sum(loads)


class StreamingVC:
    """VC_n fed one frame at a time: the window starting n frames back is scored once a frame
    follows it, which reproduces the reference's skipped last window; ``reset`` between videos."""

    def __init__(self, n: int) -> None:
        self.metric = VideoConsistency(n)
        self._frames: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=n + 1)

    def reset(self) -> None:
        self._frames.clear()

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self._frames.append((pred, gt))
        if len(self._frames) == self._frames.maxlen:
            preds, gts = zip(*self._frames)
            self.metric.update(preds, gts)  # exactly one window: frames 0..n-1 of the buffer


class VideoScorer:
    """VC_n bookkeeping for :func:`vocaseg.engine.evaluator.evaluate`.

    ``vc_gt="raw"`` (default, as the reference) compares the label files' raw values, 0 and 255
    included; ``"mapped"`` compares the decoded trainIds. A window never spans two videos or a
    frame that was skipped as unreadable.
    """

    def __init__(
        self,
        dataset: Any,
        videos: list[str],
        vc_gt: str = "raw",
        windows: tuple[int, ...] = VC_WINDOWS,
    ) -> None:
        if vc_gt not in VC_GT_MODES:
            raise UserError(f"vc_gt must be one of {', '.join(VC_GT_MODES)}, not {vc_gt!r}")
        if vc_gt == "raw" and getattr(dataset, "samples", None) is None:
            raise UserError(
                f"{type(dataset).__name__} lists no label files to read raw GT from for VC; "
                "pass vc_gt='mapped' to compare decoded labels"
            )
        self.dataset = dataset
        self.vc_gt = vc_gt
        self.trackers = {n: StreamingVC(n) for n in windows}
        self._position = {
            index: (video, position)
            for video in videos
            for position, index in enumerate(dataset.videos[video])
        }
        self._last: tuple[str, int] | None = None

    def _raw_label(self, index: int) -> np.ndarray:
        path = self.dataset.samples[index].label
        try:
            return read_label(path)
        except (UserError, OSError, ValueError) as err:
            raise DatasetError(f"{path}: {err}") from None

    def update(self, index: int, pred: torch.Tensor, label: np.ndarray) -> None:
        """Add frame ``index`` (its predicted [H, W] labels and decoded GT), in frame order."""
        video, position = self._position[index]
        if self._last != (video, position - 1):  # a new video, or a skipped frame in between
            for tracker in self.trackers.values():
                tracker.reset()
        self._last = (video, position)
        gt = self._raw_label(index) if self.vc_gt == "raw" else label
        gt = np.require(gt, requirements="W")  # torch.as_tensor warns on read-only arrays
        frame = pred.to(torch.int32).cpu().numpy()
        for tracker in self.trackers.values():
            tracker.update(frame, gt)

    def all_reduce(self) -> None:
        """Sum every VC (score total, window count) over torch.distributed ranks."""
        for tracker in self.trackers.values():
            tracker.metric.all_reduce()

    def summary(self) -> dict[str, float]:
        """``{"VC8": percent, "VC16": percent}`` (NaN where no video had a scored window)."""
        return {f"VC{n}": tracker.metric.value for n, tracker in self.trackers.items()}

    def record(self) -> dict[str, Any]:
        """VC settings and window counts for the result record."""
        return {
            "vc_gt": self.vc_gt,
            "vc_windows": {f"VC{n}": t.metric.count for n, t in self.trackers.items()},
            "vc_reference": "VSPW_baseline VC_perclip.py: window starts 0..T-n-1, videos with "
            "T <= n skipped, windows pooled over videos",
        }
