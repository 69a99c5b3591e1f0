"""Sliding-window and whole-image inference (vocaseg.inference.slide) on synthetic dense functions."""

import itertools
import math

import pytest
import torch

from vocaseg.inference.slide import slide_inference, whole_inference, window_starts


def pointwise_fn(crop):
    """A dense function without context: each output pixel depends on that input pixel only."""
    return torch.cat([crop[:, :2] * 2, crop[:, 2:3] - 1], dim=1)


@pytest.mark.parametrize(
    "length,crop,stride", [(100, 32, 20), (64, 64, 10), (65, 64, 48), (30, 64, 16), (512, 224, 112)]
)
def test_window_counts_and_border_alignment(length, crop, stride):
    starts = window_starts(length, crop, stride)
    crop = min(crop, length)
    assert len(starts) == math.ceil(max(length - crop, 0) / stride) + 1
    assert starts[0] == 0 and starts[-1] == length - crop
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_window_covering_image_equals_whole_inference():
    images = torch.randn(2, 3, 20, 28)
    fn = lambda x: x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:]) + x
    whole = whole_inference(images, fn)
    assert torch.allclose(slide_inference(images, fn, window=32, stride=16), whole)
    assert torch.allclose(slide_inference(images, fn, window=(20, 28), stride=5), whole)


def test_pointwise_function_is_unchanged_by_windowing():
    images = torch.randn(1, 3, 45, 37)
    out = slide_inference(images, pointwise_fn, 16, 7)
    assert torch.allclose(out, pointwise_fn(images), atol=1e-6)


def test_overlaps_average_window_constants():
    # Each window outputs a constant: its call index. Compare with an explicit average.
    height, width, crop, stride = 10, 13, 6, 4
    calls = []

    def fn(crop_images):
        calls.append(None)
        return torch.full((1, 1, *crop_images.shape[-2:]), float(len(calls)))

    out = slide_inference(torch.zeros(1, 3, height, width), fn, crop, stride)
    total = torch.zeros(height, width)
    count = torch.zeros(height, width)
    index = 0
    for top in window_starts(height, crop, stride):
        for left in window_starts(width, crop, stride):
            index += 1
            total[top : top + crop, left : left + crop] += index
            count[top : top + crop, left : left + crop] += 1
    assert len(calls) == index == 2 * 3  # ceil(4 / 4) + 1 rows, ceil(7 / 4) + 1 columns
    assert torch.allclose(out[0, 0], total / count)


def test_invalid_window_raises():
    with pytest.raises(ValueError, match="positive"):
        slide_inference(torch.zeros(1, 3, 8, 8), lambda x: x, 0, 4)
