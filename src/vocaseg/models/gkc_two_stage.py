"""The two-stage baseline GKC is measured against (Han et al., ICCV 2023, introduction and
Table 2: "two-stage" methods such as ZegFormer and SimBaseline classify each mask proposal by
running CLIP's image encoder on a masked crop of it).

:func:`masked_crops` cuts one CLIP input per proposal out of the model input, all at once with
``grid_sample`` (no Python loop over proposals): the proposal's bounding box (sigmoid ≥ 0.5 of its
mask logits), everything outside the mask grey (128), resized to ``size``² without keeping the
aspect ratio, CLIP-normalised. :func:`crop_class_probs` scores the crops' pooled CLIP embeddings
against the text rows (softmax of CLIP's own logit scale × cosine).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.clip.model import OPENAI_MEAN, OPENAI_STD

GREY = 128.0


def proposal_boxes(mask_logits: Tensor) -> Tensor:
    """Boxes (x0, y0, x1, y1) in [0, 1] of each mask's pixels with sigmoid ≥ 0.5:
    ``mask_logits`` [N, h, w] -> [N, 4]; an empty mask gets the whole image."""
    _, height, width = mask_logits.shape
    inside = mask_logits >= 0  # sigmoid ≥ 0.5
    rows, cols = inside.any(dim=2), inside.any(dim=1)  # [N, h], [N, w]

    def extent(present: Tensor, length: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(length, device=present.device)
        low = torch.where(present, index, length).amin(dim=1)
        high = torch.where(present, index + 1, 0).amax(dim=1)
        empty = ~present.any(dim=1)
        low = torch.where(empty, torch.zeros_like(low), low)
        high = torch.where(empty, torch.full_like(high, length), high)
        return low / length, high / length

    y0, y1 = extent(rows, height)
    x0, x1 = extent(cols, width)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def box_grids(boxes: Tensor, size: int) -> Tensor:
    """``grid_sample`` grids [N, size, size, 2] that resample each box [N, 4] to size × size
    (output pixel centres spread evenly over the box; ``align_corners=False`` coordinates)."""
    steps = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size  # [S]
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # [N, S] in [0, 1]
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    grid_x = xs[:, None, :].expand(-1, size, -1)
    grid_y = ys[:, :, None].expand(-1, -1, size)
    return torch.stack([grid_x, grid_y], dim=-1) * 2 - 1


def masked_crops(
    images: Tensor,
    mask_logits: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    size: int = 224,
) -> Tensor:
    """CLIP inputs [B·Q, 3, size, size] of every proposal.

    ``images`` [B, 3, H, W] are normalised with ``mean``/``std`` (0-255 scale); ``mask_logits``
    [B, Q, h, w] any resolution (sampled at the same normalised positions as the image).
    """
    batch, queries = mask_logits.shape[:2]
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    pixels = images * std_t + mean_t  # [B, 3, H, W] on the 0-255 scale
    logits = mask_logits.flatten(0, 1)  # [B·Q, h, w]
    grids = box_grids(proposal_boxes(logits), size).to(images.dtype)  # [B·Q, S, S, 2]
    # each image is sampled once for all its proposals: grids [Q, S, S, 2] -> [1, Q·S, S, 2]
    crops = torch.cat(
        [
            F.grid_sample(
                pixels[b : b + 1],
                grids[b * queries : (b + 1) * queries].reshape(1, queries * size, size, 2),
                mode="bicubic",
                align_corners=False,
            )  # [1, 3, Q·S, S]
            .view(3, queries, size, size)
            .transpose(0, 1)  # [Q, 3, S, S]
            for b in range(batch)
        ]
    )
    inside = F.grid_sample(logits[:, None].to(images.dtype), grids, align_corners=False) >= 0
    crops = torch.where(inside, crops, torch.full_like(crops, GREY)).clamp(0, 255)
    clip_mean = torch.tensor(OPENAI_MEAN, device=crops.device, dtype=crops.dtype).view(1, 3, 1, 1)
    clip_std = torch.tensor(OPENAI_STD, device=crops.device, dtype=crops.dtype).view(1, 3, 1, 1)
    return (crops / 255.0 - clip_mean) / clip_std


def crop_class_probs(visual: nn.Module, crops: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Class probabilities [N, K] of crops [N, 3, S, S]: softmax over the text rows [K, D] of
    exp(``logit_scale``) × cos(CLIP image embedding, text), in fp32."""
    features = visual(crops.to(next(visual.parameters()).dtype))  # [N, D]
    with torch.autocast(crops.device.type, enabled=False):
        cosine = F.normalize(features.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
        return (logit_scale.float().exp() * cosine).softmax(dim=-1)
