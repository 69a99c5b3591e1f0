"""The user-facing predictor: ``Segmenter.from_pretrained(...)``, ``set_vocabulary(...)``, ``seg(image)``.

Wraps any registered method behind the contract of ``vocaseg.models.base`` and runs it through
``vocaseg.inference.predict``, the same path the evaluator uses, so the two agree; many classes are
scored a chunk at a time, and their scores are kept only when asked for (``keep_scores``).
The vocabulary is encoded once per ``set_vocabulary`` (and cached per vocabulary); images of any
size and format go in, :class:`SegmentationResult` s come out.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vocaseg.device import autocast, resolve_device, resolve_dtype
from vocaseg.errors import UserError, VocabularyError, VocasegWarning
from vocaseg.inference.images import ImageInput, as_rgb_array
from vocaseg.inference.predict import predict_labels
from vocaseg.models.base import SegmentationModel
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from vocaseg.inference.video import VideoSegmentation
    from vocaseg.inference.video_io import VideoInput


#: ``keep_scores=None`` keeps class scores when classes × pixels of an image is at most this
#: (512 MiB of float32 scores; 10,000 classes on a 512² image would take 10 GiB).
KEEP_SCORES_ELEMENTS = 2**27

#: Settings that change only how images are cut and resized, never the text embeddings.
GEOMETRY_KEYS = frozenset(
    {"short_side", "max_long_side", "window", "stride", "pad", "size_divisor"}
)


@dataclass
class SegmentationResult:
    """One image's segmentation.

    ``label`` [H, W] int64 class indices; ``scores`` [K, H, W] float32 per-class scores at the
    image's size (argmax = label), or None when the segmenter does not keep them (``keep_scores``;
    by default, when they would take more than 512 MiB); ``class_names`` K display names;
    ``areas`` [K] pixel fractions per class (sum 1). Labels and areas never depend on
    ``keep_scores``.
    """

    label: np.ndarray
    scores: Tensor | None
    class_names: list[str]
    areas: np.ndarray

    def area_dict(self) -> dict[str, float]:
        """Class name -> pixel fraction, for every class of the vocabulary."""
        return {name: float(a) for name, a in zip(self.class_names, self.areas)}


def as_vocabulary(vocab: Vocabulary | str | os.PathLike | Sequence[Any]) -> Vocabulary:
    """A :class:`Vocabulary` from a Vocabulary, a list of names, a path to a classes file, or the
    command-line syntax ``"cat, sofa; couch"``."""
    if isinstance(vocab, Vocabulary):
        return vocab
    if isinstance(vocab, os.PathLike) or (isinstance(vocab, str) and Path(vocab).is_file()):
        return Vocabulary.from_file(vocab)
    if isinstance(vocab, str):
        return Vocabulary.parse(vocab)
    if isinstance(vocab, Sequence):
        return Vocabulary.from_names(vocab)
    raise VocabularyError(
        f"cannot make a vocabulary from {type(vocab).__name__}; pass a list of names or a file"
    )


class Segmenter:
    """Segment images into the classes of a text vocabulary.

    >>> seg = Segmenter.from_pretrained("maskclip")                  # doctest: +SKIP
    >>> seg.set_vocabulary(["cat", "sofa; couch", "floor"])          # doctest: +SKIP
    >>> result = seg("photo.jpg")                                    # doctest: +SKIP
    >>> result.label.shape, result.area_dict()                       # doctest: +SKIP
    """

    def __init__(
        self,
        model: SegmentationModel,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        keep_scores: bool | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """``keep_scores``: put the class scores in every result (True), never (False), or when
        classes × pixels of an image stays at most :data:`KEEP_SCORES_ELEMENTS` (None).
        ``chunk_size``: most queries scored at once at full resolution (None: by a memory budget,
        see :func:`vocaseg.inference.predict.predict_labels`); the results do not depend on it."""
        if chunk_size is not None and chunk_size < 1:
            raise UserError(f"chunk_size must be at least 1 query, got {chunk_size}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.keep_scores = keep_scores
        self.chunk_size = chunk_size
        self.model = model.to(self.device).eval()
        self.vocabulary: Vocabulary | None = None  # as segmented (background class added if needed)
        self.requested: Vocabulary | None = None  # as the user gave it
        self._text: Tensor | None = None
        self._cache: dict[Vocabulary, Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike = "maskclip",
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        background: str | None = None,
        keep_scores: bool | None = None,
        chunk_size: int | None = None,
        **overrides: Any,
    ) -> Segmenter:
        """A model folder (from ``vocaseg train`` / ``convert``) or a registered method name, as
        every command resolves them (:func:`vocaseg.models.resolve_model`).

        ``weights``: CLIP weights (a known name or a file; default: the method's own, downloaded
        on first use), a model folder, or ``"random"`` (tests). ``background``: a protocol in the
        command-line form, e.g. ``"bg:threshold,prob_thd=0.3"``; ``keep_scores`` and
        ``chunk_size`` as in the constructor; ``overrides`` set config values (``short_side=448``,
        ``window=0``, ``prob_thd=0.3``, ...).
        """
        from vocaseg.background import parse_background
        from vocaseg.models.resolve import resolve_model

        settings = {**overrides, **(parse_background(background) if background else {})}
        model = resolve_model(model_name_or_path, weights, settings)
        return cls(model, device, dtype, keep_scores=keep_scores, chunk_size=chunk_size)

    def update_settings(self, **settings: Any) -> None:
        """Change inference settings (window, short side, background, ...) without reloading."""
        self.model.update_settings(**settings)
        if set(settings) - GEOMETRY_KEYS:  # anything but geometry may change the text rows
            self._cache.clear()
        if self.vocabulary is not None:
            self.set_vocabulary(self.requested)

    def set_vocabulary(self, vocabulary: Vocabulary | str | os.PathLike | Sequence[Any]) -> None:
        """Set the classes to segment; their text embeddings are computed once and cached.

        Under a background protocol that needs one, a class "background" is appended when the
        vocabulary has none (it then appears in ``class_names``).
        """
        self.requested = as_vocabulary(vocabulary)
        vocab = self.model.background.prepare(self.requested)
        if len(vocab) == 1:
            warnings.warn(
                f"the vocabulary has one class ({vocab.class_names[0]!r}), so every pixel gets "
                "it; name more classes or use a background option (e.g. --set prob_thd=0.3)",
                VocasegWarning,
                stacklevel=2,
            )
        if vocab not in self._cache:
            with torch.inference_mode(), self._autocast():
                self._cache[vocab] = self.model.text_for(vocab)
        self.vocabulary = vocab
        self._text = self._cache[vocab]

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.class_names if self.vocabulary is not None else []

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 8
    ) -> SegmentationResult | list[SegmentationResult]:
        """Segment one image (path, PIL image, [H, W, 3] array, [3, H, W] tensor) or a list.

        Consecutive images of equal size run as one batch of up to ``batch_size``.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        flat = [
            r for batch in _same_size_batches(items, batch_size) for r in self.predict_arrays(batch)
        ]
        return flat[0] if single else flat

    def predict_arrays(self, arrays: list[np.ndarray]) -> list[SegmentationResult]:
        """Segment already-decoded RGB uint8 arrays [H, W, 3] of one common size as one batch."""
        if self._text is None or self.vocabulary is None:
            raise UserError("no vocabulary set; call set_vocabulary([...]) first")
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).float()  # [B, H, W, 3] -> [B, 3, H, W], 0-255
        num_classes = len(self.vocabulary)
        keep = self.keep_scores
        if keep is None:
            keep = num_classes * batch.shape[-2] * batch.shape[-1] <= KEEP_SCORES_ELEMENTS
        with torch.inference_mode(), self._autocast():
            prediction = predict_labels(
                self.model,
                batch,
                self._text,
                self.vocabulary,
                keep_scores=keep,
                chunk_size=self.chunk_size,
            )
        labels = prediction.label.cpu().numpy()  # [B, H, W]
        scores = [None] * len(labels) if prediction.scores is None else prediction.scores.float()
        results = []
        for label, score in zip(labels, scores):
            counts = np.bincount(label.reshape(-1), minlength=num_classes)
            score = None if score is None else score.cpu()
            results.append(
                SegmentationResult(label, score, self.class_names, counts / counts.sum())
            )
        return results

    def segment_video(
        self,
        video: VideoInput,
        *,
        every: int = 1,
        start: float | None = None,
        end: float | None = None,
        smoothing: int = 0,
        batch_size: int = 8,
        fps: float | None = None,
    ) -> VideoSegmentation:
        """Segment a video lazily: an iterator of ``VideoFrameResult`` (label, scores, areas, plus
        index, time, image), one per frame of [start, end) seconds.

        ``video``: a file (mp4, mov, webm, mkv, avi; needs ``pip install 'vocaseg[video]'``), an
        animated GIF, a folder of numbered frames, a [T, H, W, 3] array or an iterable of frames
        (``fps`` sets the rate of the last three, default 25). ``every=N`` segments every N-th frame
        and reuses its labels for the frames between; ``smoothing=N`` averages class scores over
        the last N segmented frames (0: off; it needs the class scores, so they are kept);
        ``batch_size`` frames run as one batch.
        See :class:`vocaseg.inference.video.VideoSegmentation`.
        """
        from vocaseg.inference.video import VideoSegmentation

        return VideoSegmentation(
            self,
            video,
            every=every,
            start=start,
            end=end,
            smoothing=smoothing,
            batch_size=batch_size,
            fps=fps,
        )

    def _autocast(self) -> Any:
        return autocast(self.device, self.dtype)


def _same_size_batches(items: list[ImageInput], batch_size: int) -> list[list[np.ndarray]]:
    """Decode ``items`` and group consecutive images of one size into batches."""
    batches: list[list[np.ndarray]] = []
    for item in items:
        array = as_rgb_array(item)
        if batches and array.shape == batches[-1][0].shape and len(batches[-1]) < batch_size:
            batches[-1].append(array)
        else:
            batches.append([array])
    return batches
