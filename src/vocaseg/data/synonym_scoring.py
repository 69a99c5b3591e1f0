"""Offline per-instance synonym scores for GKC's text diversification (Han et al., ICCV 2023,
"Text Diversification": S_i = exp(R(Ins_k)·T(w_k^i)) / Σ_j exp(R(Ins_k)·T(w_k^j)); the released ``syn_CLIP_sim.py``).

For every non-crowd segment of a COCO panoptic split: the bounding-box crop of the image (not
masked) through CLIP's preprocessing (short side to the input size, bicubic; centre crop; CLIP
normalisation), its image embedding scored against "a photo of {synonym}" for each synonym of the
segment's class, and the softmax of CLIP's logits (logit scale × cosine) over those synonyms.
The records use the released per-image format (:func:`vocaseg.data.synonyms.write_synonym_scores`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from vocaseg.data.panoptic import PanopticDataset

PROMPT = "a photo of {}"


def clip_crop(image: np.ndarray, mask: np.ndarray, size: int, mean, std) -> Tensor:
    """CLIP input [3, size, size] of the bounding box of ``mask`` in ``image`` (uint8 [H, W, 3]):
    short side resized to ``size`` (bicubic), centre-cropped, normalised (``mean``/``std`` 0-1)."""
    rows, cols = np.nonzero(mask)
    box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = box.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    pixels = Image.fromarray(np.ascontiguousarray(box)).resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    array = np.asarray(pixels.crop((left, top, left + size, top + size)), np.float32) / 255.0
    array = (array - np.array(mean, np.float32)) / np.array(std, np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _segments(
    dataset: PanopticDataset, indices: Iterator[int], size: int, mean, std
) -> Iterator[tuple[int, int, dict, Tensor | None]]:
    """(image index, position in the JSON, segment, crop) for every segment of the images; crowd
    segments and segments without pixels come with ``None``."""
    for index in indices:
        item = dataset[index]
        for position, segment in enumerate(item["segments"]):
            mask = item["segment_ids"] == segment["id"]
            crop = None
            if not segment["iscrowd"] and mask.any():
                crop = clip_crop(item["image"], mask, size, mean, std)
            yield index, position, segment, crop


def score_synonyms(
    dataset: PanopticDataset,
    clip: Any,
    synonyms: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Released-format records, one per image of ``dataset`` (the first ``limit``), scored by
    ``clip`` (a vocaseg CLIP with both towers) over each class's ``synonyms``."""
    from vocaseg.text.embed import TextEmbedder

    device = next(clip.parameters()).device
    embedder = TextEmbedder(clip, templates=[PROMPT], disk_cache=False)
    size, mean, std = clip.config.image_size, clip.config.mean, clip.config.std
    scale = float(clip.logit_scale.detach().exp())
    indices = range(len(dataset) if limit is None else min(limit, len(dataset)))
    entries: dict[int, dict[int, dict[str, Any]]] = {i: {} for i in indices}
    pending: list[tuple[int, int, dict, Tensor]] = []

    def flush() -> None:
        crops = torch.stack([crop for *_, crop in pending]).to(device)
        with torch.no_grad():
            images = F.normalize(clip.encode_image(crops).float(), dim=-1)  # [n, D]
        for (index, position, segment, _), embedding in zip(pending, images):
            name = class_names[segment["class"]]
            names = list(synonyms.get(name, [name]))
            text = embedder.embed_names(names).float().to(device)  # [S, D] unit rows
            probs = (scale * text @ embedding).softmax(dim=0).tolist()
            entries[index][position] = _entry(segment, dict(zip(names, probs)))
        pending.clear()

    bar = tqdm(indices, desc="score synonyms", unit="image", disable=not progress)
    for index, position, segment, crop in _segments(dataset, iter(bar), size, mean, std):
        if crop is None:
            entries[index][position] = _entry(segment, {})
            continue
        pending.append((index, position, segment, crop))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return [
        {
            "file_name": dataset.samples[i].label.name,
            "image_id": dataset.annotations[dataset.samples[i].label.name].get("image_id"),
            "segments_info": [entries[i][p] for p in sorted(entries[i])],
        }
        for i in indices
    ]


def _entry(segment: dict, scores: dict[str, float]) -> dict[str, Any]:
    return {"id": segment["id"], "ori_category_id": segment["category_id"], "syn_category": scores}
