"""The 30 multi-scale teacher views: geometry (cells at round(k·S/n), order), content,
resize and CLIP normalisation."""

import pytest
import torch

from vocaseg.clip.model import OPENAI_MEAN, OPENAI_STD
from vocaseg.data.teacher_views import (
    MultiScaleCropTeacher,
    ViewSpec,
    cell_edges,
    make_views,
    view_boxes,
)


def test_cells_at_224():
    assert cell_edges(224, 2) == [0, 112, 224]
    assert cell_edges(224, 3) == [0, 75, 149, 224]
    assert cell_edges(224, 4) == [0, 56, 112, 168, 224]
    assert cell_edges(225, 2) == [0, 113, 225]  # halves round up


@pytest.mark.parametrize("size", [224, 96, 50])
def test_thirty_views_in_order(size):
    boxes = view_boxes(size, size)
    assert len(boxes) == 30 == ViewSpec().num_views
    assert boxes[0] == (0, size, 0, size)
    start = 1
    for n in (2, 3, 4):
        cells = boxes[start : start + n * n]
        expected = [
            (round(i * size / n + 1e-9), round((i + 1) * size / n + 1e-9),
             round(j * size / n + 1e-9), round((j + 1) * size / n + 1e-9))
            for i in range(n) for j in range(n)
        ]  # fmt: skip
        assert cells == expected  # row-major
        # the cells tile the image exactly
        covered = torch.zeros(size, size, dtype=torch.int64)
        for top, bottom, left, right in cells:
            covered[top:bottom, left:right] += 1
        assert torch.all(covered == 1)
        start += n * n


def test_view_content_resize_and_normalisation():
    """Each 4×4 cell of a 48-px image has its own constant colour, so every view of the 4×4 grid
    is that colour after resizing, and a 2×2 view holds exactly its four cells."""
    cell = 12
    colours = torch.arange(16 * 3, dtype=torch.float32).view(4, 4, 3) * 5  # 0..235
    image = colours.repeat_interleave(cell, 0).repeat_interleave(cell, 1).permute(2, 0, 1)
    spec = ViewSpec(size=24)
    views = make_views(image[None].to(torch.uint8), spec)
    assert views.shape == (1, 30, 3, 24, 24)
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(OPENAI_STD).view(3, 1, 1) * 255
    pixels = views[0] * std + mean  # back to 0-255
    for k in range(16):  # views 14..29 are the 4×4 cells
        expected = colours[k // 4, k % 4].view(3, 1, 1).expand(3, 24, 24)
        torch.testing.assert_close(pixels[14 + k], expected, atol=1e-3, rtol=0)
    # 2×2 view 2 (top-right) = cells (0,2),(0,3),(1,2),(1,3), each 6 px after the 2x upscale
    top_right = pixels[2]
    torch.testing.assert_close(top_right[:, 2, 2], colours[0, 2], atol=1e-3, rtol=0)
    torch.testing.assert_close(top_right[:, 20, 20], colours[1, 3], atol=1e-3, rtol=0)
    # values are whole 8-bit levels (PIL-like rounding) after the resize
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)


def test_teacher_targets_for_batches_and_lists():
    calls = []

    def teacher(x):
        calls.append(len(x))
        return x.mean(dim=(2, 3)) @ torch.ones(3, 5)  # [N, 5]

    spec = ViewSpec(size=16)
    wrapped = MultiScaleCropTeacher(teacher, spec, name="toy", sha256="0" * 64, chunk=25)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    batched = wrapped(images)
    assert batched.shape == (2, 30, 5) and batched.dtype == torch.float32
    assert calls == [25, 25, 10]  # 60 views in chunks
    as_list = wrapped([images[0], images[1]])
    torch.testing.assert_close(as_list, batched)
    odd = wrapped([images[0], torch.zeros(3, 40, 40, dtype=torch.uint8)])  # native crops vary
    assert odd.shape == (2, 30, 5)


def test_crop_source_is_checked():
    with pytest.raises(ValueError, match="crop_source"):
        ViewSpec(crop_source="full")
    assert ViewSpec(grids=[1, 3]).record()["count"] == 10
