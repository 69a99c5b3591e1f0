"""Whole-image and sliding-window inference as pure functions over a dense-prediction callable.

Window placement follows MMSegmentation's ``slide_inference``: ``ceil(max(L - crop, 0) / stride) + 1``
windows per axis, the last one aligned to the border; a crop larger than the image shrinks to it.
Overlapping outputs are summed and divided by the number of windows covering each pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import Tensor

DenseFn = Callable[[Tensor], Tensor]  # [B, 3, h, w] -> [B, C, h, w]
Box = tuple[int, int, int, int]  # top, left, height, width


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels."""
    crop = min(crop, length)
    count = math.ceil(max(length - crop, 0) / stride) + 1
    return [min(i * stride, length - crop) for i in range(count)]


def window_boxes(
    height: int, width: int, window: int | tuple[int, int], stride: int | tuple[int, int]
) -> list[Box]:
    """The windows over a ``height`` × ``width`` image, row by row."""
    crop_h, crop_w = (window, window) if isinstance(window, int) else window
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    if min(crop_h, crop_w, stride_h, stride_w) <= 0:
        raise ValueError("window and stride must be positive")
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    return [
        (top, left, crop_h, crop_w)
        for top in window_starts(height, crop_h, stride_h)
        for left in window_starts(width, crop_w, stride_w)
    ]


def stitch(outputs: Iterable[tuple[Box, Tensor]], height: int, width: int) -> Tensor:
    """Average window outputs ([B, C, h, w] at each box) over a [B, C, height, width] canvas."""
    total: Tensor | None = None
    count: Tensor | None = None
    for (top, left, crop_h, crop_w), out in outputs:
        out = out.float()
        if total is None or count is None:
            total = out.new_zeros(out.shape[0], out.shape[1], height, width)
            count = out.new_zeros(1, 1, height, width)
        total[:, :, top : top + crop_h, left : left + crop_w] += out
        count[:, :, top : top + crop_h, left : left + crop_w] += 1
    assert total is not None and count is not None
    return total / count


def whole_inference(images: Tensor, fn: DenseFn) -> Tensor:
    """Run ``fn`` on the whole batch [B, 3, H, W]; returns its [B, C, H, W] output in float32."""
    return fn(images).float()


def slide_inference(
    images: Tensor, fn: DenseFn, window: int | tuple[int, int], stride: int | tuple[int, int]
) -> Tensor:
    """Average ``fn`` over overlapping windows of ``images`` [B, 3, H, W] -> [B, C, H, W] float32."""
    height, width = images.shape[-2:]
    boxes = window_boxes(height, width, window, stride)
    outputs = (
        (box, fn(images[:, :, box[0] : box[0] + box[2], box[1] : box[1] + box[3]])) for box in boxes
    )
    return stitch(outputs, height, width)
