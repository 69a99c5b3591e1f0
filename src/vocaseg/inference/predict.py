"""One image batch through any method: resize, normalise, window, stitch, resize back, finalize.

Shared by :class:`vocaseg.Segmenter` and the evaluator so both give identical numbers.
:func:`predict_scores` holds every class at full resolution at once; :func:`predict_labels` scores
a run of classes at a time when there are many (docs/contract.md §3), so memory stays bounded by
the chunk, and gives the same labels (class scores only when asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from vocaseg.inference.pamr import pamr
from vocaseg.inference.slide import Box, slide_inference, stitch, whole_inference, window_boxes
from vocaseg.models.base import Preprocess, SegmentationModel
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Score every class at once while queries × images × pixels stays at most this (256 MiB float32
#: per full-resolution map; the unchunked path holds a few such maps).
WHOLE_ELEMENTS = 2**26
#: Otherwise a chunk holds this many elements per full-resolution map (128 MiB float32).
CHUNK_ELEMENTS = 2**25


@dataclass
class Prediction:
    """Labels [B, H, W] int64 over the vocabulary; class scores [B, K, H, W] float32 if kept."""

    label: Tensor
    scores: Tensor | None


def resized_shape(height: int, width: int, pre: Preprocess) -> tuple[int, int]:
    """Keep-ratio size whose short side is ``pre.short_side``, capped so the long side fits
    ``pre.max_long_side`` (MMSeg ``Resize(scale=(long, short), keep_ratio=True)``)."""
    if pre.short_side is None:
        return height, width
    scale = pre.short_side / min(height, width)
    if pre.max_long_side is not None:
        scale = min(scale, pre.max_long_side / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def normalize(images: Tensor, pre: Preprocess) -> Tensor:
    """[B, 3, H, W] on the 0-255 scale -> normalised float32."""
    mean = torch.tensor(pre.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=images.device).view(1, 3, 1, 1)
    return (images.float() - mean) / std


def pad_to_multiple(
    images: Tensor, divisor: int, mode: str = "center"
) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad [B, C, H, W] with zeros to multiples of ``divisor``: symmetrically (``center``, as
    SCLIP's compute_padsize) or right and bottom (``bottom_right``, as detectron2's ImageList).

    Returns the padded tensor and the (left, right, top, bottom) padding."""
    height, width = images.shape[-2:]
    pad_h = (-height) % divisor
    pad_w = (-width) % divisor
    if mode == "bottom_right":
        pads = (0, pad_w, 0, pad_h)
    else:
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h == 0 and pad_w == 0:
        return images, pads
    return F.pad(images, pads), pads


def predict_scores(
    model: SegmentationModel, images: Tensor, text: Tensor, vocabulary: Vocabulary
) -> Tensor:
    """Class scores [B, K, H, W] (float32) over ``vocabulary`` for ``images`` [B, 3, H, W] on the
    0-255 scale; the argmax over K is the label map.

    ``text`` is ``model.text_for(vocabulary)``; ``vocabulary`` is already prepared for the model's
    background protocol (``model.background.prepare``).
    """
    return _predict_scores(model, images, model_input(model, images, text), text, vocabulary)


def _predict_scores(
    model: SegmentationModel, images: Tensor, x: Tensor, text: Tensor, vocabulary: Vocabulary
) -> Tensor:
    """:func:`predict_scores` given ``x``, the model's input for ``images``."""
    pre, background = model.preprocess, model.background
    scored = background.scored_vocabulary(vocabulary)

    def dense(crop: Tensor) -> Tensor:
        padded, pads = pad_to_multiple(crop, pre.size_divisor, pre.pad)
        size = (padded.shape[-2], padded.shape[-1])
        return _window_output(model, model(padded, text), size, pads, scored)

    if pre.window is None:
        stitched = whole_inference(x, dense)
    else:
        stitched = slide_inference(x, dense, pre.window, pre.stride or pre.window)
    stitched = _to_image(stitched, images, pre)
    return model.finalize(stitched, vocabulary, background)


def predict_labels(
    model: SegmentationModel,
    images: Tensor,
    text: Tensor,
    vocabulary: Vocabulary,
    *,
    keep_scores: bool = True,
    chunk_size: int | None = None,
) -> Prediction:
    """Labels (and, with ``keep_scores``, the class scores) of :func:`predict_scores`, scoring at
    most ``chunk_size`` queries at a time at full resolution (default: as many as fit
    :data:`CHUNK_ELEMENTS`, all of them when they fit :data:`WHOLE_ELEMENTS`).

    Chunks hold whole classes; methods that are not ``chunkable`` always score every class at once.
    Labels alone under a protocol that only takes an argmax need one pass over the chunks
    (``SegmentationModel.class_order``); otherwise a method with a normaliser over every class
    (MaskCLIP's softmax) makes a first pass for it.
    """
    background = model.background
    scored = background.scored_vocabulary(vocabulary)
    x = model_input(model, images, text)
    pixels = images.shape[0] * max(images.shape[-2] * images.shape[-1], x.shape[-2] * x.shape[-1])
    if chunk_size is None:
        queries = len(scored.queries)
        chunk_size = queries if queries * pixels <= WHOLE_ELEMENTS else CHUNK_ELEMENTS // pixels
    chunks = class_chunks(scored, max(1, chunk_size))
    if len(chunks) == 1 or not model.chunkable:
        scores = _predict_scores(model, images, x, text, vocabulary)
        return Prediction(scores.argmax(1), scores if keep_scores else None)

    stitched = _chunk_stitcher(model, x, text, scored, images)
    if not keep_scores and background.argmax_only:  # the order of the scores is enough

        def order_chunks() -> Iterator[tuple[int, Tensor]]:
            for classes in chunks:
                part = chunk_vocabulary(scored, classes)
                yield classes.start, model.class_order(stitched(classes), part, background)

        return Prediction(background.labels(order_chunks, vocabulary), None)

    first = stitched(chunks[0])
    channel = model.background_scores(first, background)
    state = model.chunk_normaliser(first, None)
    del first
    if state is not None:  # a first pass over every chunk for the per-pixel normaliser
        for classes in chunks[1:]:
            state = model.chunk_normaliser(stitched(classes), state)

    def score_chunks() -> Iterator[tuple[int, Tensor]]:
        for classes in chunks:
            part = chunk_vocabulary(scored, classes)
            yield classes.start, model.class_scores(stitched(classes), part, background, state)

    if not keep_scores:
        return Prediction(background.labels(score_chunks, vocabulary, channel), None)
    full: Tensor | None = None
    for start, part_scores in score_chunks():
        if full is None:
            full = part_scores.new_empty(part_scores.shape[0], len(scored), *part_scores.shape[2:])
        full[:, start : start + part_scores.shape[1]] = part_scores
    assert full is not None
    scores = background.apply(full, vocabulary, channel)
    return Prediction(scores.argmax(1), scores)


def class_chunks(scored: Vocabulary, size: int) -> list[range]:
    """Runs of whole classes of ``scored`` with at most ``size`` queries each (a class with more
    names than that is a run of its own)."""
    chunks, start, queries = [], 0, 0
    for index, names in enumerate(scored.classes):
        if queries and queries + len(names) > size:
            chunks.append(range(start, index))
            start, queries = index, 0
        queries += len(names)
    chunks.append(range(start, len(scored)))
    return chunks


def chunk_vocabulary(scored: Vocabulary, classes: range) -> Vocabulary:
    """The classes ``classes`` of ``scored`` as a vocabulary of their own (seen ids re-based)."""
    seen = None
    if scored.seen is not None:
        seen = tuple(i - classes.start for i in scored.seen if i in classes)
    background = scored.background
    return Vocabulary(
        scored.classes[classes.start : classes.stop],
        seen,
        background - classes.start if background is not None and background in classes else None,
    )


def model_input(model: SegmentationModel, images: Tensor, text: Tensor) -> Tensor:
    """``images`` [B, 3, H, W] (0-255) resized by the model's rule, normalised, in its dtype."""
    pre = model.preprocess
    height, width = images.shape[-2:]
    new_h, new_w = resized_shape(height, width, pre)
    x = normalize(images, pre)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    return x.to(next(iter(model.parameters()), text).dtype)


def _window_output(
    model: SegmentationModel,
    logits: Tensor,
    padded: tuple[int, int],
    pads: tuple[int, int, int, int],
    scored: Vocabulary,
) -> Tensor:
    """Logits [B, R, h, w] of one window padded to ``padded`` (H, W) -> the window's output:
    upsampled to the padded size, the padding cut, then ``model.window_output``."""
    left, right, top, bottom = pads
    logits = F.interpolate(logits.float(), size=padded, mode="bilinear", align_corners=False)
    logits = logits[..., top : padded[0] - bottom, left : padded[1] - right]
    return model.window_output(logits, scored, model.background)


def _to_image(stitched: Tensor, images: Tensor, pre: Preprocess) -> Tensor:
    """Stitched outputs at the model's input size -> at the size of ``images`` [B, 3, H, W],
    refined by PAMR when ``pre.pamr_steps`` (NACLIP: on the stitched scores at image size, before
    the softmax; PAMR treats every channel alone, so a chunk of classes gets the same values)."""
    size = images.shape[-2:]
    if stitched.shape[-2:] != size:
        stitched = F.interpolate(stitched, size=tuple(size), mode="bilinear", align_corners=False)
    if pre.pamr_steps:
        stitched = pamr(normalize(images, pre), stitched.float(), steps=pre.pamr_steps)
    return stitched


def _chunk_stitcher(
    model: SegmentationModel, x: Tensor, text: Tensor, scored: Vocabulary, images: Tensor
) -> Callable[[range], Tensor]:
    """Run the model once per window of ``x`` (the model's input for ``images``); returns
    ``classes -> stitched outputs`` of those classes at the images' size, the full-resolution
    work done for them alone."""
    pre = model.preprocess
    height, width = x.shape[-2:]
    if pre.window is None:
        boxes: list[Box] = [(0, 0, height, width)]
    else:
        boxes = window_boxes(height, width, pre.window, pre.stride or pre.window)
    windows = []
    for top, left, crop_h, crop_w in boxes:
        crop = x[:, :, top : top + crop_h, left : left + crop_w]
        padded, pads = pad_to_multiple(crop, pre.size_divisor, pre.pad)
        rows = model.dense_chunks(padded, text, scored)
        windows.append((rows, (padded.shape[-2], padded.shape[-1]), pads))

    def stitched(classes: range) -> Tensor:
        part = chunk_vocabulary(scored, classes)
        outputs = (
            (box, _window_output(model, rows(classes), padded, pads, part))
            for box, (rows, padded, pads) in zip(boxes, windows)
        )
        if pre.window is None:
            return _to_image(next(outputs)[1].float(), images, pre)
        return _to_image(stitch(outputs, height, width), images, pre)

    return stitched
