"""Fonts for legend text in any script: a chain of fonts, per-character fallback, a visible form.

The chain, tried in order for each character: files named in ``$VOCASEG_FONTS`` (paths separated by
``os.pathsep``), the shipped DejaVu Sans (Latin, Greek, Cyrillic, many symbols), CJK and symbol
fonts the system has (Noto CJK, WenQuanYi, Droid Sans Fallback, PingFang, Microsoft YaHei, Segoe
UI Symbol, ...), then the shipped CJK subset (common Chinese, Japanese and Korean characters). A
font "has" a character when its ``cmap`` table (OpenType spec, "cmap - Character to Glyph Index
Mapping Table", formats 4, 6, 12 and 13) maps it to a glyph other than 0 (``.notdef``: an empty
box, or nothing). A character no font has is written as ``U+XXXX``, never drawn as ``.notdef``. Licences of the
shipped fonts: ``vocaseg/assets/LICENSE-*.txt``.
"""

from __future__ import annotations

import os
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from PIL import ImageFont

ASSETS = "assets"
LATIN = "DejaVuSans.ttf"
CJK = "VocasegCJKSubset-Regular.otf"
_WINDOWS = Path(os.environ.get("WINDIR", "C:/Windows")) / "Fonts"
SYSTEM_FONTS = (
    # Linux distributions
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansSymbols2-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoEmoji-Regular.ttf",
    "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
    # macOS
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/System/Library/Fonts/AppleSDGothicNeo.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    # Windows
    str(_WINDOWS / "msyh.ttc"),
    str(_WINDOWS / "meiryo.ttc"),
    str(_WINDOWS / "malgun.ttf"),
    str(_WINDOWS / "Nirmala.ttf"),
    str(_WINDOWS / "LeelawUI.ttf"),
    str(_WINDOWS / "seguisym.ttf"),
    str(_WINDOWS / "seguiemj.ttf"),
)  # fmt: skip
SYSTEM_FONT_GLOBS = ("/usr/share/fonts/truetype/noto/NotoSans*-Regular.ttf",)  # one per script
# Subtables that map Unicode: (platform, encoding) of Unicode (0, *) and Windows (3, 1) / (3, 10)
_UNICODE_MAPS = {(3, 1), (3, 10)}


@dataclass(frozen=True)
class FontFile:
    """One font in a file (``index`` selects a face of a ``.ttc`` collection); read lazily."""

    path: Path
    index: int = 0

    def has(self, char: str) -> bool:
        return ord(char) in _coverage(self.path, self.index)

    def at(self, size: int) -> ImageFont.FreeTypeFont:
        return _load(self.path, self.index, size)


def _read(handle: BinaryIO, offset: int, fmt: str) -> tuple:
    handle.seek(offset)
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))


def _format4(handle: BinaryIO, offset: int) -> Iterator[int]:
    """BMP segments: ``idRangeOffset`` 0 maps c -> c + idDelta, else through ``glyphIdArray``."""
    (seg_x2,) = _read(handle, offset + 6, ">H")
    count = seg_x2 // 2
    ends = _read(handle, offset + 14, f">{count}H")
    starts = _read(handle, offset + 16 + seg_x2, f">{count}H")
    deltas = _read(handle, offset + 16 + 2 * seg_x2, f">{count}h")
    range_base = offset + 16 + 3 * seg_x2
    range_offsets = _read(handle, range_base, f">{count}H")
    for n, (start, end, delta, range_offset) in enumerate(zip(starts, ends, deltas, range_offsets)):
        if start == 0xFFFF:
            continue
        for char in range(start, end + 1):
            if range_offset == 0:
                glyph = (char + delta) & 0xFFFF
            else:  # the offset counts from the idRangeOffset entry itself
                (glyph,) = _read(
                    handle, range_base + 2 * n + range_offset + 2 * (char - start), ">H"
                )
                glyph = (glyph + delta) & 0xFFFF if glyph else 0
            if glyph:
                yield char


def _subtable(handle: BinaryIO, offset: int) -> Iterator[int]:
    (kind,) = _read(handle, offset, ">H")
    if kind == 4:
        yield from _format4(handle, offset)
    elif kind == 6:  # trimmed table: first code, count, glyph ids
        first, count = _read(handle, offset + 6, ">HH")
        glyphs = _read(handle, offset + 10, f">{count}H")
        yield from (first + i for i, glyph in enumerate(glyphs) if glyph)
    elif kind in (12, 13):  # groups (first, last, glyph); 12 numbers glyphs up from glyph
        (groups,) = _read(handle, offset + 12, ">I")
        for n in range(groups):
            first, last, glyph = _read(handle, offset + 16 + 12 * n, ">III")
            if kind == 12:
                yield from range(first + (glyph == 0), last + 1)
            elif glyph:
                yield from range(first, last + 1)


@cache
def _coverage(path: Path, index: int) -> frozenset[int]:
    """Code points the font maps to a real glyph; empty when FreeType cannot draw it at text size
    (unreadable files, bitmap-only colour emoji fonts)."""
    try:
        _load(path, index, 14)
        return _cmap(path, index)
    except (OSError, ValueError, struct.error):
        return frozenset()


def _cmap(path: Path, index: int) -> frozenset[int]:
    """Code points the Unicode subtables of the font's ``cmap`` table map to a glyph other than 0."""
    with open(path, "rb") as handle:
        start = 0
        if handle.read(4) == b"ttcf":  # a collection: offsets of its faces
            (start,) = _read(handle, 12 + 4 * index, ">I")
        (tables,) = _read(handle, start + 4, ">H")
        cmap = None
        for n in range(tables):
            tag, _, table_offset, _ = _read(handle, start + 12 + 16 * n, ">4sIII")
            if tag == b"cmap":
                cmap = table_offset
        if cmap is None:
            return frozenset()
        (count,) = _read(handle, cmap + 2, ">H")
        covered: set[int] = set()
        for n in range(count):
            platform, encoding, sub = _read(handle, cmap + 4 + 8 * n, ">HHI")
            if platform == 0 or (platform, encoding) in _UNICODE_MAPS:
                covered.update(_subtable(handle, cmap + sub))
    return frozenset(covered)


@cache
def _load(path: Path, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size, index=index)


@cache
def font_chain() -> tuple[FontFile, ...]:
    """The fonts tried for each character, in order (see the module docstring)."""
    assets = resources.files("vocaseg") / ASSETS
    user = [p for p in os.environ.get("VOCASEG_FONTS", "").split(os.pathsep) if p]
    found = [*SYSTEM_FONTS, *(str(p) for g in SYSTEM_FONT_GLOBS for p in sorted(_glob(g)))]
    chain = [
        *(FontFile(Path(p)) for p in user if Path(p).is_file()),
        FontFile(Path(str(assets / LATIN))),
        *(FontFile(Path(p)) for p in found if Path(p).is_file()),
        FontFile(Path(str(assets / CJK))),
    ]
    return tuple(dict.fromkeys(chain))


def _glob(pattern: str) -> list[Path]:
    folder = Path(pattern).parent
    return list(folder.glob(Path(pattern).name)) if folder.is_dir() else []


def visible_form(char: str) -> str:
    """How a character no font has is written: ``U+732B``."""
    return f"U+{ord(char):04X}"


def _dropped(char: str) -> bool:
    """Invisible by design (format characters, variation selectors): nothing to show."""
    return unicodedata.category(char) == "Cf" or "VARIATION SELECTOR" in unicodedata.name(char, "")


def text_runs(text: str, size: int) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    """``text`` as (string, font) runs that draw every character visibly.

    Each character goes to the first font of :func:`font_chain` that has it. Control characters
    become spaces; format characters and variation selectors (invisible by design; some fonts
    draw them as dotted boxes) are dropped; a character no font has becomes :func:`visible_form`,
    set off from its neighbours by spaces.
    """
    chain = font_chain()
    plain = next(f for f in chain if all(f.has(c) for c in "U+0123456789ABCDEF "))
    pieces: list[tuple[str, FontFile, bool]] = []  # (text, font, is a visible form)
    for char in text:
        if unicodedata.category(char) == "Cc":
            char = " "
        if _dropped(char):
            continue
        font = next((f for f in chain if f.has(char)), None)
        replaced = font is None
        if (
            pieces
            and (replaced or pieces[-1][2])
            and not (char.isspace() or pieces[-1][0].isspace())
        ):
            pieces.append((" ", plain, False))
        pieces.append((visible_form(char), plain, True) if replaced else (char, font, False))
    runs: list[tuple[str, FontFile]] = []
    for piece, font, _ in pieces:  # neighbours in the same font form one run
        if runs and runs[-1][1] == font:
            runs[-1] = (runs[-1][0] + piece, font)
        else:
            runs.append((piece, font))
    return [(string, font.at(size)) for string, font in runs]


def runs_width(runs: list[tuple[str, ImageFont.FreeTypeFont]]) -> float:
    """Advance width in pixels of ``runs`` drawn one after another."""
    return sum(font.getlength(string) for string, font in runs)
