"""One image batch through any method: resize, normalise, window, stitch, resize back, finalize.

Shared by :class:`vocaseg.Segmenter` and the evaluator so both give identical numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from vocaseg.inference.pamr import pamr
from vocaseg.inference.slide import slide_inference, whole_inference
from vocaseg.models.base import Preprocess, SegmentationModel

if TYPE_CHECKING:
    from vocaseg.text.vocab import Vocabulary


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
    pre, background = model.preprocess, model.background
    scored = background.scored_vocabulary(vocabulary)
    height, width = images.shape[-2:]
    new_h, new_w = resized_shape(height, width, pre)
    x = normalize(images, pre)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    x = x.to(next(iter(model.parameters()), text).dtype)

    def dense(crop: Tensor) -> Tensor:
        padded, (left, right, top, bottom) = pad_to_multiple(crop, pre.size_divisor, pre.pad)
        logits = model(padded, text)  # [B, Q, h, w]
        logits = F.interpolate(
            logits.float(), size=padded.shape[-2:], mode="bilinear", align_corners=False
        )
        logits = logits[..., top : padded.shape[-2] - bottom, left : padded.shape[-1] - right]
        return model.window_output(logits, scored, background)

    if pre.window is None:
        stitched = whole_inference(x, dense)
    else:
        stitched = slide_inference(x, dense, pre.window, pre.stride or pre.window)
    if stitched.shape[-2:] != (height, width):
        stitched = F.interpolate(
            stitched, size=(height, width), mode="bilinear", align_corners=False
        )
    if pre.pamr_steps:  # NACLIP: PAMR on the stitched scores at image size, before the softmax
        stitched = pamr(normalize(images, pre), stitched.float(), steps=pre.pamr_steps)
    return model.finalize(stitched, vocabulary, background)
