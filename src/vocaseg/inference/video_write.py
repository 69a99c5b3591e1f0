"""Video outputs: an overlay video with the legend drawn inside every frame (the image overlay's
legend, on a translucent box at the top-left, so the video keeps the input's size), and the
per-frame label maps as a zip of PNG files.

The overlay is H.264 (libx264) in MP4, or MPEG-4 Part 2 where the FFmpeg in PyAV lacks libx264,
in yuv420p (what browsers and phones play). yuv420p needs even sizes, so an odd width or height is
padded by one replicated pixel column/row. Label maps go to a zip (stored, not re-compressed) of
``000000.png``, ``000001.png``, ...: palette PNGs up to 256 classes, 16-bit grayscale above (see
:func:`vocaseg.viz.label_png`). PNG is lossless and squeezes flat label maps to a few kB; any image
library reads one frame without decoding the others, which a lossless label video would not allow.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw

from vocaseg.fonts import runs_width, text_runs
from vocaseg.inference.video_io import import_av
from vocaseg.viz import (
    LEGEND_FONT_SIZE,
    LEGEND_MARGIN,
    LEGEND_ROW,
    LEGEND_SWATCH,
    LEGEND_TEXT_WIDTH,
    fit_text,
    label_png,
    legend_rows,
)

PIXEL_FORMAT = "yuv420p"
_ENCODER_OPTIONS = {
    "libx264": {"crf": "20", "preset": "veryfast"},
    # fixed quantiser 3 (global_quality is in lambda units: qscale * FF_QP2LAMBDA = 118)
    "mpeg4": {"flags": "+qscale", "global_quality": str(3 * 118)},
}
_CODEC_NAMES = {"libx264": "h264", "mpeg4": "mpeg4"}


def pick_encoder() -> str:
    """``"libx264"`` when PyAV's FFmpeg has it, else ``"mpeg4"`` (in every FFmpeg build)."""
    av = import_av()
    try:
        av.codec.Codec("libx264", "w")
    except ValueError:  # av.codec.codec.UnknownCodecError
        return "mpeg4"
    return "libx264"


class OverlayVideoWriter:
    """Encode RGB frames of one size to an MP4 file at a constant ``rate``."""

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        rate: Fraction,
        encoder: str | None = None,
    ) -> None:
        av = import_av()
        self.encoder = encoder or pick_encoder()
        self.codec = _CODEC_NAMES.get(self.encoder, self.encoder)
        self.width, self.height = width + width % 2, height + height % 2  # yuv420p: even sizes
        self._container = av.open(os.fspath(path), "w", format="mp4")
        self._stream = self._container.add_stream(
            self.encoder, rate=rate, options=_ENCODER_OPTIONS.get(self.encoder, {})
        )
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = PIXEL_FORMAT
        self._frame_type = av.VideoFrame
        self._closed = False

    def write(self, rgb: np.ndarray) -> None:
        """Append one [H, W, 3] uint8 frame (H, W as given at construction)."""
        pad_h, pad_w = self.height - rgb.shape[0], self.width - rgb.shape[1]
        if pad_h or pad_w:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = self._frame_type.from_ndarray(rgb, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self, flush: bool = True) -> None:
        """Finish the file: flush the encoder (skip that for a file about to be deleted). A second
        call does nothing."""
        if self._closed:
            return
        self._closed = True
        if flush:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()


class LabelArchiveWriter:
    """Per-frame label maps [H, W] as PNG files in a zip; a repeated label array is encoded once."""

    def __init__(self, path: str | os.PathLike, colours: np.ndarray) -> None:
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)
        self._colours = colours
        self._last: tuple[np.ndarray, bytes] | None = None
        self.count = 0

    def write(self, label: np.ndarray) -> None:
        if self._last is None or self._last[0] is not label:
            buffer = io.BytesIO()
            label_png(label, self._colours).save(buffer, format="PNG")
            self._last = (label, buffer.getvalue())
        self._zip.writestr(f"{self.count:06d}.png", self._last[1])
        self.count += 1

    def close(self) -> None:
        self._zip.close()


def read_label_archive(path: str | os.PathLike) -> list[np.ndarray]:
    """All label maps of an archive written by :class:`LabelArchiveWriter`, in frame order."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist(), key=lambda name: int(name.split(".")[0]))
        return [np.array(Image.open(io.BytesIO(archive.read(name)))) for name in names]


def draw_legend_inside(
    image: Image.Image, label: np.ndarray, class_names: Sequence[str], colours: np.ndarray
) -> Image.Image:
    """Paint the legend of ``label`` [H, W] onto ``image`` (RGB, same size) in place, top-left on a
    translucent white box, so a video keeps the input's size.

    The rows and text are those of the image overlay's legend (:func:`vocaseg.viz.legend_rows`:
    classes present, largest area first, "… N more" below what fits; any script through
    :mod:`vocaseg.fonts`); names are cut with "…" so the text takes at most half the frame's
    width.
    """
    rows = legend_rows(label, class_names, image.height)
    max_text = max(LEGEND_SWATCH, min(LEGEND_TEXT_WIDTH, image.width // 2))
    lines = []
    for row in rows:
        keep = len(row.text) - row.text.rfind("  ") if row.index is not None else 0
        lines.append(fit_text(row.text, max_text, keep))
    text_width = int(np.ceil(max(runs_width(runs) for runs in lines)))
    box_w = min(image.width, 3 * LEGEND_MARGIN + LEGEND_SWATCH + text_width)
    box_h = min(image.height, 2 * LEGEND_MARGIN + LEGEND_ROW * len(rows))
    region = np.asarray(image.crop((0, 0, box_w, box_h)), dtype=np.float32)
    image.paste(Image.fromarray((0.35 * region + 0.65 * 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(image)
    ascent, descent = text_runs("A", LEGEND_FONT_SIZE)[0][1].getmetrics()
    for n, (row, runs) in enumerate(zip(rows, lines)):
        y = LEGEND_MARGIN + n * LEGEND_ROW
        if row.index is not None:
            box = (LEGEND_MARGIN, y + 3, LEGEND_MARGIN + LEGEND_SWATCH, y + 3 + LEGEND_SWATCH)
            draw.rectangle(box, fill=tuple(int(c) for c in colours[row.index]), outline="black")
        x = 2 * LEGEND_MARGIN + LEGEND_SWATCH
        baseline = y + (LEGEND_ROW - ascent - descent) // 2 + ascent
        for string, font in runs:  # each run in its own font, on one baseline
            draw.text((x, baseline), string, fill="black", font=font, anchor="ls")
            x += font.getlength(string)
    return image
