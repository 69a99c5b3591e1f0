"""Video segmentation: frames stream from :mod:`vocaseg.inference.video_io`, run in batches through
:meth:`Segmenter.predict_arrays` (the vocabulary is encoded once, by ``set_vocabulary``), are
optionally smoothed over time (:mod:`vocaseg.inference.smoothing`) and come out one
:class:`VideoFrameResult` at a time, lazily, so memory does not grow with the video's length.

``every=N`` segments frames 0, N, 2N, ... of the selected range; the frames between reuse the
labels of the last segmented frame. :func:`write_video_outputs` (in ``video_outputs``) writes the
overlay video, label maps and areas JSON that ``vocaseg segment VIDEO`` produces.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vocaseg.errors import UserError, VideoError
from vocaseg.inference.segmenter import SegmentationResult
from vocaseg.inference.smoothing import TemporalSmoother
from vocaseg.inference.video_io import FrameSource, VideoInfo, VideoInput, open_video
from vocaseg.viz import class_areas

if TYPE_CHECKING:
    from vocaseg.inference.segmenter import Segmenter

#: Most frames held while a batch fills, in multiples of ``batch_size`` (matters for every > 1).
PENDING_BATCHES = 4


@dataclass(kw_only=True)
class VideoFrameResult(SegmentationResult):
    """One frame's segmentation: the :class:`SegmentationResult` fields (``label`` [H, W] int64,
    ``scores`` [K, H, W] float32, ``class_names``, ``areas`` [K]) plus ``index`` (frame number
    within the selected range), ``time`` (seconds from the start of the video), ``image`` (the
    RGB uint8 frame [H, W, 3]) and ``segmented`` (False where the labels were reused from the last
    segmented frame, with ``every`` > 1). Reused frames share their label and scores arrays."""

    index: int
    time: float
    image: np.ndarray
    segmented: bool


class VideoSegmentation(Iterator[VideoFrameResult]):
    """Iterator over the segmented frames of a video; made by :meth:`Segmenter.segment_video`.

    The source is opened (and checked) at construction; ``info`` describes it, ``expected_frames``
    estimates how many frames the range holds (for progress bars), ``corrupt`` lists frames that
    could not be decoded (they are skipped). Close it (or use ``with``) if you stop early.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        video: VideoInput,
        *,
        every: int = 1,
        start: float | None = None,
        end: float | None = None,
        smoothing: int = 0,
        batch_size: int = 8,
        fps: float | None = None,
    ) -> None:
        _check_options(every, start, end, smoothing, batch_size)
        if segmenter.vocabulary is None:
            raise UserError("no vocabulary set; call set_vocabulary([...]) first")
        if smoothing > 1 and not segmenter.keep_scores:  # smoothing averages class scores
            if segmenter.keep_scores is False:
                raise UserError(
                    "temporal smoothing averages class scores, and this segmenter was made with "
                    "keep_scores=False; use keep_scores=None or True, or smoothing=0"
                )
            segmenter = copy.copy(segmenter)  # shares the model and the text cache
            segmenter.keep_scores = True
        self.segmenter = segmenter
        self.every, self.smoothing, self.batch_size = every, smoothing, batch_size
        self.start, self.end = start or 0.0, end
        self.source: FrameSource = open_video(video, fps=fps)
        self.info: VideoInfo = self.source.info
        if self.info.duration is not None and self.start >= self.info.duration:
            self.source.close()
            raise VideoError(
                f"start {self.start:g} s is past the end of {self.info.source} "
                f"({self.info.duration:.2f} s long); pass an earlier start time"
            )
        self.expected_frames = self.info.frames_between(self.start, end)
        self._results = self._generate()

    @property
    def corrupt(self) -> list[str]:
        return self.source.corrupt

    def __next__(self) -> VideoFrameResult:
        return next(self._results)

    def close(self) -> None:
        self._results.close()
        self.source.close()

    def __enter__(self) -> VideoSegmentation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _generate(self) -> Iterator[VideoFrameResult]:
        smoother = TemporalSmoother(self.smoothing) if self.smoothing > 1 else None
        pending: list[tuple[int, float, np.ndarray]] = []  # waiting for their batch's labels
        last: SegmentationResult | None = None
        try:
            frames = self.source.read(self.start, self.end)
            for index, (time, image) in enumerate(frames):
                if index % self.every and not pending:  # labels known: no need to wait
                    yield _frame(last, index, time, image, segmented=False)
                    continue
                pending.append((index, time, image))
                batch = sum(1 for i, _, _ in pending if i % self.every == 0)
                if batch == self.batch_size or len(pending) >= PENDING_BATCHES * self.batch_size:
                    last = yield from self._flush(pending, last, smoother)
            last = yield from self._flush(pending, last, smoother)
        finally:
            self.source.close()

    def _flush(
        self,
        pending: list[tuple[int, float, np.ndarray]],
        last: SegmentationResult | None,
        smoother: TemporalSmoother | None,
    ) -> Iterator[VideoFrameResult]:
        """Segment the pending frames due for it as one batch, yield all pending frames in order,
        return the last segmented result (the labels later frames reuse)."""
        due = [image for index, _, image in pending if index % self.every == 0]
        results = iter(self.segmenter.predict_arrays(due) if due else [])
        for index, time, image in pending:
            segmented = index % self.every == 0
            if segmented:
                last = next(results)
                if smoother is not None:
                    last = _smoothed(last, smoother)
            yield _frame(last, index, time, image, segmented=segmented)
        pending.clear()
        return last


def _frame(
    result: SegmentationResult | None, index: int, time: float, image: np.ndarray, segmented: bool
) -> VideoFrameResult:
    assert result is not None  # frame 0 of every range is segmented
    return VideoFrameResult(
        label=result.label,
        scores=result.scores,
        class_names=result.class_names,
        areas=result.areas,
        index=index,
        time=time,
        image=image,
        segmented=segmented,
    )


def _smoothed(result: SegmentationResult, smoother: TemporalSmoother) -> SegmentationResult:
    scores = smoother(result.scores)  # [K, H, W], mean over the last frames
    label = scores.argmax(dim=0).numpy()  # [H, W]
    areas = class_areas(label, len(result.class_names))
    return SegmentationResult(label, scores, result.class_names, areas)


def _check_options(
    every: int, start: float | None, end: float | None, smoothing: int, batch_size: int
) -> None:
    if every < 1:
        raise UserError(f"every must be at least 1 (1 segments every frame), got {every}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if smoothing < 0:
        raise UserError(f"smoothing must be 0 (off) or a number of frames, got {smoothing}")
    if start is not None and start < 0:
        raise UserError(f"start must be 0 or more seconds, got {start}")
    if end is not None and end <= (start or 0.0):
        raise UserError(f"end ({end} s) must come after start ({start or 0.0} s)")
