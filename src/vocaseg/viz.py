"""Visualisation of label maps: a palette for up to thousands of classes, a coloured overlay with
class boundaries and an area-sorted legend, and palette PNGs that store the class index per pixel.

Pure PIL + numpy (no matplotlib). Used by ``vocaseg segment`` and available as ``vocaseg.viz``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_GOLDEN = 0.6180339887498949
# Saturation/value levels cycled with coprime periods, so ids close in hue differ in shade.
_SATURATIONS = (0.95, 0.55, 0.8)
_VALUES = (0.95, 0.7, 0.55, 0.85)


def make_palette(num_classes: int) -> np.ndarray:
    """Distinct colours [num_classes, 3] uint8.

    Hues advance by the golden ratio, so consecutive ids land far apart on the colour wheel and every
    prefix of the palette spreads evenly; saturation and value cycle with coprime periods so that ids
    sharing a hue sector differ in shade. Colours are unique for any count up to 2048.
    """
    colours = np.empty((num_classes, 3), dtype=np.uint8)
    used: set[tuple[int, int, int]] = set()
    for index in range(num_classes):
        hue = (index * _GOLDEN) % 1.0
        sat = _SATURATIONS[index % len(_SATURATIONS)]
        val = _VALUES[index % len(_VALUES)]
        rgb = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val))
        while rgb in used:  # rounding collisions (rare): nudge the blue channel
            rgb = (rgb[0], rgb[1], (rgb[2] + 1) % 256)
        used.add(rgb)
        colours[index] = rgb
    return colours


def label_png(label: np.ndarray, colours: np.ndarray | None = None) -> Image.Image:
    """The label map [H, W] as an image whose pixel values are the class indices.

    Up to 256 classes: a palette ("P") PNG that viewers show in colour. More: 16-bit grayscale
    ("I;16"), since a palette holds only 256 entries. Either way ``np.array(Image.open(f))`` gives the
    indices back.
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be [H, W], got shape {label.shape}")
    top = int(label.max()) if label.size else 0
    if label.size and int(label.min()) < 0:
        raise ValueError("label holds negative class indices")
    if top < 256:
        image = Image.fromarray(label.astype(np.uint8), mode="P")
        colours = (
            make_palette(256) if colours is None else np.asarray(colours, dtype=np.uint8)[:256]
        )
        image.putpalette(colours.reshape(-1).tolist())
        return image
    if top >= 65536:
        raise ValueError(f"class index {top} does not fit a 16-bit PNG")
    return Image.fromarray(label.astype(np.uint16))


def class_areas(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of pixels per class [num_classes], summing to 1."""
    counts = np.bincount(np.asarray(label).reshape(-1), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def legend_entries(label: np.ndarray, class_names: Sequence[str]) -> list[tuple[int, str, float]]:
    """(class index, name, area fraction) of every class present, largest area first."""
    areas = class_areas(label, len(class_names))
    order = np.argsort(-areas, kind="stable")
    return [(int(i), class_names[i], float(areas[i])) for i in order if areas[i] > 0]


def boundary_mask(label: np.ndarray) -> np.ndarray:
    """Pixels [H, W] bool whose right or lower neighbour has another class."""
    edges = np.zeros(label.shape, dtype=bool)
    horizontal = label[:, 1:] != label[:, :-1]
    vertical = label[1:, :] != label[:-1, :]
    edges[:, :-1] |= horizontal
    edges[:-1, :] |= vertical
    return edges


def overlay(
    image: Image.Image | np.ndarray,
    label: np.ndarray,
    class_names: Sequence[str],
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    boundaries: bool = True,
    legend: bool = True,
) -> Image.Image:
    """Blend class colours over ``image`` (RGB, same size as ``label`` [H, W]).

    ``alpha`` is the weight of the colour. ``boundaries`` draws white class borders. ``legend``
    appends a panel on the right listing the classes present, largest area first, with their share
    of the image.
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    label = np.asarray(label)
    if rgb.shape[:2] != label.shape:
        raise ValueError(f"image {rgb.shape[:2]} and label {label.shape} differ in size")
    colours = make_palette(len(class_names)) if palette is None else np.asarray(palette, np.uint8)
    blended = (1 - alpha) * rgb[..., :3].astype(np.float32) + alpha * colours[label]
    if boundaries:
        blended[boundary_mask(label)] = 255
    result = Image.fromarray(blended.round().astype(np.uint8))
    if not legend:
        return result
    return _with_legend(result, label, class_names, colours)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def _percent(fraction: float) -> str:
    return "<0.1%" if fraction < 0.0005 else f"{100 * fraction:.1f}%"


def _with_legend(
    image: Image.Image, label: np.ndarray, class_names: Sequence[str], colours: np.ndarray
) -> Image.Image:
    entries = legend_entries(label, class_names)
    font = _font(14)
    row, swatch, margin = 20, 14, 8
    lines = [f"{name}  {_percent(area)}" for _, name, area in entries]
    measure = ImageDraw.Draw(image)
    text_width = max(int(measure.textlength(line, font=font)) for line in lines)
    panel_w = margin * 3 + swatch + text_width
    panel_h = margin * 2 + row * len(lines)
    canvas = Image.new("RGB", (image.width + panel_w, max(image.height, panel_h)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = image.width + margin
    for n, ((index, _, _), line) in enumerate(zip(entries, lines)):
        y = margin + n * row
        box = (x0, y + 2, x0 + swatch, y + 2 + swatch)
        draw.rectangle(box, fill=tuple(int(c) for c in colours[index]), outline="black")
        draw.text((x0 + swatch + margin, y), line, fill="black", font=font)
    return canvas
