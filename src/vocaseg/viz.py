"""Visualisation of label maps: a palette for up to thousands of classes, a coloured overlay with
class boundaries and an area-sorted legend, and palette PNGs that store the class index per pixel.

The legend keeps the overlay at the image's height: the classes with the largest areas that fit,
then "… N more"; names longer than 240 pixels are cut with "…". Text in any script is drawn with
per-character font fallback (:mod:`vocaseg.fonts`), never as empty boxes.

Pure PIL + numpy (no matplotlib). Used by ``vocaseg segment`` and available as ``vocaseg.viz``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vocaseg.fonts import runs_width, text_runs

_GOLDEN = 0.6180339887498949
# Saturation/value levels cycled with coprime periods, so ids close in hue differ in shade.
_SATURATIONS = (0.95, 0.55, 0.8)
_VALUES = (0.95, 0.7, 0.55, 0.85)
LEGEND_FONT_SIZE = 14
LEGEND_ROW, LEGEND_SWATCH, LEGEND_MARGIN = 20, 14, 8  # pixels
LEGEND_TEXT_WIDTH = 240  # pixels; longer names are cut with "…"


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
    of the image, as many as fit the image's height (then "… N more").
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


def _percent(fraction: float) -> str:
    return "<0.1%" if fraction < 0.0005 else f"{100 * fraction:.1f}%"


@dataclass(frozen=True)
class LegendRow:
    """One legend line: a class (``index``, drawn with its colour swatch) or, with ``index`` None,
    the "… N more" line that stands for the classes that did not fit."""

    index: int | None
    text: str


def legend_rows(label: np.ndarray, class_names: Sequence[str], height: int) -> list[LegendRow]:
    """The lines of a legend ``height`` pixels tall: classes present, largest area first, as many
    as fit (at least one), then "… N more" for the rest."""
    entries = legend_entries(label, class_names)
    capacity = max(1, (height - 2 * LEGEND_MARGIN) // LEGEND_ROW)
    shown = entries if len(entries) <= capacity else entries[: max(1, capacity - 1)]
    rows = [LegendRow(index, f"{name}  {_percent(area)}") for index, name, area in shown]
    if len(shown) < len(entries):
        rows.append(LegendRow(None, f"\u2026 {len(entries) - len(shown)} more"))
    return rows


def fit_text(
    text: str, max_width: float, keep: int = 0
) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    """Font runs of ``text`` (see :func:`vocaseg.fonts.text_runs`) cut with "…" to ``max_width``
    pixels; the last ``keep`` characters (e.g. the area share) always stay."""
    runs = text_runs(text, LEGEND_FONT_SIZE)
    if runs_width(runs) <= max_width:
        return runs
    head, tail = text[: len(text) - keep], text[len(text) - keep :]
    low, high = 0, len(head)  # longest prefix of head that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if runs_width(text_runs(head[:middle] + "\u2026" + tail, LEGEND_FONT_SIZE)) <= max_width:
            low = middle
        else:
            high = middle - 1
    return text_runs(head[:low] + "\u2026" + tail, LEGEND_FONT_SIZE)


def _with_legend(
    image: Image.Image, label: np.ndarray, class_names: Sequence[str], colours: np.ndarray
) -> Image.Image:
    rows = legend_rows(label, class_names, image.height)
    if not rows:
        return image
    lines = []
    for row in rows:
        keep = len(row.text) - row.text.rfind("  ") if row.index is not None else 0
        lines.append(fit_text(row.text, LEGEND_TEXT_WIDTH, keep))
    text_width = max(runs_width(runs) for runs in lines)
    panel_w = LEGEND_MARGIN * 3 + LEGEND_SWATCH + int(np.ceil(text_width))
    panel_h = LEGEND_MARGIN * 2 + LEGEND_ROW * len(rows)  # taller than the image only when tiny
    canvas = Image.new("RGB", (image.width + panel_w, max(image.height, panel_h)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    ascent, descent = text_runs("A", LEGEND_FONT_SIZE)[0][1].getmetrics()
    x0 = image.width + LEGEND_MARGIN
    for n, (row, runs) in enumerate(zip(rows, lines)):
        y = LEGEND_MARGIN + n * LEGEND_ROW
        if row.index is not None:
            box = (x0, y + 3, x0 + LEGEND_SWATCH, y + 3 + LEGEND_SWATCH)
            draw.rectangle(box, fill=tuple(int(c) for c in colours[row.index]), outline="black")
        x = x0 + LEGEND_SWATCH + LEGEND_MARGIN
        baseline = y + (LEGEND_ROW - ascent - descent) // 2 + ascent
        for string, font in runs:  # each run in its own font, on one baseline
            draw.text((x, baseline), string, fill="black", font=font, anchor="ls")
            x += font.getlength(string)
    return canvas
