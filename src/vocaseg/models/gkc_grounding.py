"""GKC's optional caption grounding loss (Han et al., "Global Knowledge Calibration for Fast
Open-Vocabulary Segmentation", ICCV 2023, implementation details; the word-region grounding of
OVR-CNN, Zareian et al. CVPR 2021, Sec. 3.1, as the released GKC code configures it;
docs/methods/gkc.md).

Words are the CLIP text embeddings of a caption's nouns, regions the class embeddings of the
matched queries. For every caption i and image j of the micro-batch, with c = cos(word, region)
and exp(s) the classifier's learned scale:

- attention: softmax over the regions of exp(s)·c (each word to the regions) and softmax over the
  words (each region to the words); pairs with a padded word or region take no attention;
- distance: Σ attention · exp(s)·(1 − c), averaged over the caption's words (words to regions) or
  over the image's regions (regions to words);
- loss: cross-entropy of −distance choosing image i's caption among the batch's captions and
  caption i's image among the batch's images, for both alignments, averaged over the four.
"""

from __future__ import annotations

import torch
from torch import Tensor

# A masked similarity sits this far below the smallest one before the softmax (the released value).
MASK_MARGIN = 100.0
# Added to the largest distance for a caption-image pair with neither words nor regions.
EMPTY_MARGIN = 100.0


def _unit(x: Tensor) -> Tensor:
    """Rows divided by their norm + 1e-7 (zero rows stay zero)."""
    return x / (x.norm(dim=-1, keepdim=True) + 1e-7)


def grounding_loss(
    words: Tensor, word_mask: Tensor, regions: Tensor, region_mask: Tensor, scale: Tensor
) -> Tensor:
    """Bidirectional image-caption cross-entropy of one micro-batch (a scalar).

    ``words`` [B, W, D] and ``word_mask`` [B, W] (bool, True = a real word); ``regions``
    [B, R, D] and ``region_mask`` [B, R]; ``scale`` = exp(s), a scalar tensor. Rows of ``words``
    and ``regions`` need not be normalised; padded rows are ignored whatever they hold.
    """
    words, regions = _unit(words.float()), _unit(regions.float())
    word_mask, region_mask = word_mask.bool(), region_mask.bool()
    cosine = torch.einsum("iwd,jrd->ijwr", words, regions)  # [B caption, B image, W, R]
    valid = word_mask[:, None, :, None] & region_mask[None, :, None, :]  # [B, B, W, R]
    cosine = cosine.masked_fill(~valid, 0.0)
    similarity, distance = scale * cosine, scale * (1.0 - cosine)
    floor = similarity.min().detach() - MASK_MARGIN
    similarity = torch.where(valid, similarity, floor)
    n_words = word_mask.sum(-1).float()  # [B]
    n_regions = region_mask.sum(-1).float()  # [B]
    to_regions = similarity.softmax(dim=-1) * word_mask[:, None, :, None]  # [B, B, W, R]
    to_words = similarity.softmax(dim=-2) * region_mask[None, :, None, :]
    costs = [
        (to_regions * distance).sum((-2, -1)) / n_words.clamp(min=1.0)[:, None],  # [B, B]
        (to_words * distance).sum((-2, -1)) / n_regions.clamp(min=1.0)[None, :],
    ]
    empty = (n_words[:, None] == 0) & (n_regions[None, :] == 0)  # [B, B]
    terms = []
    for cost in costs:
        cost = torch.where(empty, cost.max().detach() + EMPTY_MARGIN, cost)
        terms.append(-(-cost).log_softmax(dim=0).diagonal().mean())  # choose the caption
        terms.append(-(-cost).log_softmax(dim=1).diagonal().mean())  # choose the image
    return torch.stack(terms).mean()


__all__ = ["grounding_loss"]
