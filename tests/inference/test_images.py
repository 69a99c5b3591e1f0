"""Image input conversion (``vocaseg.inference.images``): tensors of every float dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vocaseg.inference.images import as_rgb_array


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_tensors_read_like_float32(dtype):
    image = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = as_rgb_array(image)
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3)
    assert np.array_equal(out, as_rgb_array(image.float()))
    array = image.float().permute(1, 2, 0).numpy()  # [H, W, 3]
    assert np.array_equal(as_rgb_array(array.astype(np.float16)), as_rgb_array(image.half()))
