"""The training transform with MMSegmentation semantics, on numpy/torch only (no torchvision).

``TrainTransform`` is the ZegCLIP/TagCLIP training pipeline (their released configs): random keep-ratio rescale
of ``scale``·r, r ~ U[ratio_range]; random crop retried up to 10 times until no class covers
``cat_max_ratio`` of the crop; horizontal flip; photometric distortion (brightness, contrast,
saturation, hue, in MMSeg's order, each with p = 0.5); normalisation on the 0-255 scale; padding to
the crop size (image 0 after normalisation, label ``ignore_index``). All randomness comes from a
``numpy.random.Generator``, so a training run that restores its generator replays the same crops.

Samples are dicts ``{"image": uint8 [H, W, 3], "label": int [H, W], ...}``; other keys pass
through, and ``label_keys`` names every label-like key that must follow the image's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vocaseg.constants import CLIP_MEAN, CLIP_STD

Array = np.ndarray


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio size fitting ``scale`` = (long, short) edges (``mmcv.imrescale``): (h, w)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: Array, size: tuple[int, int]) -> Array:
    """Bilinear resize (half-pixel centres, no antialias, as OpenCV) of uint8 [H, W, 3] -> uint8."""
    if image.shape[:2] == size:
        return image
    # torch.tensor copies: inputs may be read-only (PIL) or flipped (negative strides).
    x = torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_label(label: Array, size: tuple[int, int]) -> Array:
    """Nearest-neighbour resize of an integer map [H, W]."""
    if label.shape[:2] == size:
        return label
    x = torch.tensor(np.ascontiguousarray(label))[None, None].float()  # [1, 1, H, W]
    x = F.interpolate(x, size=size, mode="nearest")
    return x[0, 0].numpy().astype(label.dtype)


def rgb_to_hsv(rgb: Array) -> Array:
    """float [..., 3] RGB in [0, 255] -> HSV with hue in degrees [0, 360), s in [0, 1], v in [0, 255]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    h = np.where(
        v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    h = np.where(delta > 0, (h * 60.0) % 360.0, 0.0)
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv[..., 0] / 60.0, hsv[..., 1], hsv[..., 2]
    sector = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )  # [6, ..., 3]
    return np.take_along_axis(table, sector[None, ..., None].repeat(3, -1), 0)[0]


def _to_uint8(image: Array) -> Array:
    # MMSeg's ``convert``: clip then truncate to uint8 after every photometric step.
    return np.clip(image, 0, 255).astype(np.uint8)


def photometric_distortion(
    image: Array,
    rng: np.random.Generator,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> Array:
    """MMSeg ``PhotoMetricDistortion`` on uint8 RGB [H, W, 3]; hue_delta on OpenCV's 0-180 scale."""

    def contrast(img: Array) -> Array:
        if rng.integers(2):
            img = _to_uint8(img.astype(np.float32) * rng.uniform(*contrast_range))
        return img

    if rng.integers(2):
        image = _to_uint8(
            image.astype(np.float32) + rng.uniform(-brightness_delta, brightness_delta)
        )
    contrast_first = bool(rng.integers(2))
    if contrast_first:
        image = contrast(image)
    if rng.integers(2):
        hsv = rgb_to_hsv(image.astype(np.float32))
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation_range), 0.0, 1.0)
        image = _to_uint8(hsv_to_rgb(hsv))
    if rng.integers(2):
        hsv = rgb_to_hsv(image.astype(np.float32))
        hsv[..., 0] = (hsv[..., 0] + 2.0 * rng.integers(-hue_delta, hue_delta)) % 360.0
        image = _to_uint8(hsv_to_rgb(hsv))
    if not contrast_first:
        image = contrast(image)
    return image


def _normalize(image: Array, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W], (x - mean) / std on the 0-255 scale."""
    x = torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class TrainTransform:
    """MMSeg training pipeline; call as ``transform(sample, rng)`` with a numpy Generator."""

    def __init__(
        self,
        crop_size: int | tuple[int, int] = 512,
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] | None = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: bool = True,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        ignore_index: int = 255,
        label_keys: Sequence[str] = ("label",),
        crop_tries: int = 10,
    ) -> None:
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.scale = tuple(scale)
        self.ratio_range = ratio_range
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.photometric = photometric
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.label_keys = tuple(label_keys)
        self.crop_tries = crop_tries

    def _crop_box(self, label: Array, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of a random crop; retried while one class dominates."""
        height, width = label.shape
        crop_h, crop_w = min(self.crop_size[0], height), min(self.crop_size[1], width)

        def draw() -> tuple[int, int, int, int]:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, top + crop_h, left, left + crop_w

        box = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(self.crop_tries):
                top, bottom, left, right = box
                values, counts = np.unique(label[top:bottom, left:right], return_counts=True)
                counts = counts[values != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = draw()
        return box

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = dict(sample)
        image = np.asarray(sample["image"])
        labels = {key: np.asarray(sample[key]).astype(np.int64) for key in self.label_keys}
        for key, label in labels.items():
            if label.shape != image.shape[:2]:
                raise ValueError(
                    f"{key} shape {label.shape} differs from image shape {image.shape[:2]}"
                    f" ({sample.get('path', 'sample')})"
                )

        # 1. Random keep-ratio rescale to scale * r.
        ratio = rng.uniform(*self.ratio_range) if self.ratio_range else 1.0
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        size = rescale_size(*image.shape[:2], target)
        image = resize_image(image, size)
        labels = {k: resize_label(v, size) for k, v in labels.items()}

        # 2. Random crop (class-ratio rule on the first label key).
        top, bottom, left, right = self._crop_box(labels[self.label_keys[0]], rng)
        image = image[top:bottom, left:right]
        labels = {k: v[top:bottom, left:right] for k, v in labels.items()}

        # 3. Horizontal flip.
        if rng.random() < self.flip_prob:
            image = image[:, ::-1]
            labels = {k: v[:, ::-1] for k, v in labels.items()}

        # 4. Photometric distortion.
        if self.photometric:
            image = photometric_distortion(image, rng)

        # 5. Normalise; 6. pad bottom/right to the crop size.
        tensor = _normalize(image, self.mean, self.std)  # [3, h, w]
        pad_h = max(self.crop_size[0] - tensor.shape[1], 0)
        pad_w = max(self.crop_size[1] - tensor.shape[2], 0)
        out["image"] = F.pad(tensor, (0, pad_w, 0, pad_h), value=0.0)
        for key, label in labels.items():
            label_t = torch.from_numpy(np.ascontiguousarray(label))
            out[key] = F.pad(label_t, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return out
