"""Legend fonts: every character is drawn with a real glyph (its mask differs from the font's .notdef
box) or written as ``U+XXXX``; the cmap reader agrees with what FreeType draws."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vocaseg import fonts

ABSENT = "\U0010fffd"  # a private-use code point no font maps: FreeType draws .notdef for it


@pytest.fixture
def shipped_only(monkeypatch):
    """The shipped fonts alone, as on a machine with no CJK or symbol fonts installed."""
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", ())
    monkeypatch.setattr(fonts, "SYSTEM_FONT_GLOBS", ())
    monkeypatch.delenv("VOCASEG_FONTS", raising=False)
    fonts.font_chain.cache_clear()
    yield
    fonts.font_chain.cache_clear()


def mask(font, text: str) -> tuple:
    drawn = font.getmask(text)
    return drawn.size, bytes(drawn)


def assert_no_tofu(runs) -> None:
    for string, font in runs:
        notdef = mask(font, ABSENT)
        for char in string:
            assert mask(font, char) != notdef, (char, font.getname())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("собака", [("собака", "DejaVu Sans")]),
        ("猫", [("猫", "Vocaseg CJK Subset")]),
        ("🐱", [("🐱", "DejaVu Sans")]),  # DejaVu Sans 2.37 has a monochrome cat face
        ("cat 猫", [("cat ", "DejaVu Sans"), ("猫", "Vocaseg CJK Subset")]),
        ("한국어", [("한국어", "Vocaseg CJK Subset")]),
    ],
)
def test_names_in_any_script_use_fonts_that_have_their_glyphs(shipped_only, name, expected):
    runs = fonts.text_runs(name, 14)
    assert [(string, font.getname()[0]) for string, font in runs] == expected
    assert_no_tofu(runs)


def test_characters_no_font_has_are_written_as_code_points(shipped_only, monkeypatch):
    monkeypatch.setattr(fonts, "CJK", fonts.LATIN)  # DejaVu alone: no CJK font anywhere
    fonts.font_chain.cache_clear()
    runs = fonts.text_runs("猫猫 cat" + ABSENT, 14)
    assert [string for string, _ in runs] == ["U+732B U+732B cat U+10FFFD"]
    assert_no_tofu(runs)


def test_control_and_invisible_characters(shipped_only):
    texts = [s for s, _ in fonts.text_runs("a\tb zero\u200bwidth \u2764\ufe0f", 14)]
    assert texts == ["a b zerowidth \u2764"]


def test_rendered_legend_text_is_not_the_notdef_box(shipped_only):
    for name in ("собака", "猫", "🐱"):
        runs = fonts.text_runs(name, 14)
        drawn, boxes = Image.new("L", (80, 24)), Image.new("L", (80, 24))
        x = 2
        for string, font in runs:
            ImageDraw.Draw(drawn).text((x, 18), string, fill=255, font=font, anchor="ls")
            ImageDraw.Draw(boxes).text((x, 18), ABSENT * len(string), fill=255, font=font,
                                       anchor="ls")  # fmt: skip
            x += font.getlength(string)
        assert np.asarray(drawn).any() and not np.array_equal(np.asarray(drawn), np.asarray(boxes))


@pytest.mark.parametrize("file_name", [fonts.LATIN, fonts.CJK])
def test_cmap_reader_agrees_with_freetype(shipped_only, file_name):
    font = next(f for f in fonts.font_chain() if f.path.name == file_name)
    drawn = font.at(14)
    notdef = mask(drawn, ABSENT)
    sample = [*range(0x21, 0x250), *range(0x370, 0x530, 3), *range(0x2000, 0x2800, 7),
              *range(0x3000, 0x3100), *range(0x4E00, 0x9FA0, 97), *range(0xAC00, 0xD7A4, 61),
              *range(0x1F300, 0x1F650, 5)]  # fmt: skip
    for code in sample:
        char = chr(code)
        if unicodedata.category(char)[0] in "CMZ":
            continue  # invisible, combining and space characters: the shaper adds or swaps glyphs
        assert font.has(char) == (mask(drawn, char) != notdef), hex(code)


def test_user_fonts_come_first_and_missing_files_are_skipped(shipped_only, monkeypatch, tmp_path):
    cjk = str(next(f for f in fonts.font_chain() if f.path.name == fonts.CJK).path)
    monkeypatch.setenv("VOCASEG_FONTS", f"{tmp_path / 'missing.ttf'}:{cjk}")
    fonts.font_chain.cache_clear()
    chain = fonts.font_chain()
    assert [f.path.name for f in chain] == [fonts.CJK, fonts.LATIN]
    assert fonts.text_runs("ア", 14)[0][1].getname()[0] == "Vocaseg CJK Subset"


def test_an_unreadable_font_file_covers_nothing(tmp_path):
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"not a font")
    assert not fonts.FontFile(bad).has("a")
