"""Constants shared across layers: pixel statistics on the 0-255 scale and image file suffixes.

They live at the bottom of the package so that data, models and inference read one copy.
"""

from __future__ import annotations

#: OpenAI CLIP's pixel statistics (Radford et al., 2021), 0-255 scale.
CLIP_MEAN = (122.770938, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)
#: ImageNet statistics as MMSegmentation and detectron2 write them, 0-255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

#: Image file suffixes (lower case; compare with ``path.suffix.lower()``) that folders are scanned for.
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
)  # fmt: skip
