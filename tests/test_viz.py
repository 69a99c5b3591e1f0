"""Palette, label PNGs and overlays (vocaseg.viz)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vocaseg.viz import (
    LEGEND_TEXT_WIDTH,
    LegendRow,
    boundary_mask,
    fit_text,
    label_png,
    legend_entries,
    legend_rows,
    make_palette,
    overlay,
)


def test_palette_has_847_distinct_colours_and_neighbours_far_apart():
    colours = make_palette(847).astype(int)
    assert colours.shape == (847, 3)
    assert len({tuple(c) for c in colours}) == 847
    neighbour_distance = np.abs(colours[1:] - colours[:-1]).sum(axis=1)  # L1 in RGB
    assert neighbour_distance.min() > 100
    assert np.array_equal(make_palette(20), colours[:20])  # prefixes are stable


@pytest.mark.parametrize("num_classes", [3, 300])
def test_label_png_round_trip(tmp_path, num_classes):
    rng = np.random.default_rng(0)
    label = rng.integers(0, num_classes, size=(17, 90))
    label_png(label).save(tmp_path / "l.png")
    reread = np.array(Image.open(tmp_path / "l.png"))
    assert np.array_equal(reread, label)
    assert Image.open(tmp_path / "l.png").mode == ("P" if num_classes <= 256 else "I;16")


def test_legend_lists_present_classes_by_area():
    label = np.zeros((10, 10), dtype=int)
    label[:, :3] = 2  # 30%
    label[0, 9] = 3  # 1%
    entries = legend_entries(label, ["a", "b", "c", "d"])
    assert [(i, n) for i, n, _ in entries] == [(0, "a"), (2, "c"), (3, "d")]
    assert sum(a for _, _, a in entries) == pytest.approx(1.0)


def test_overlay_blends_draws_boundaries_and_appends_a_legend():
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    label = np.zeros((40, 60), dtype=int)
    label[:, 30:] = 1
    plain = np.asarray(overlay(image, label, ["x", "y"], alpha=1.0, boundaries=False, legend=False))
    colours = make_palette(2)
    assert np.array_equal(plain[5, 5], colours[0]) and np.array_equal(plain[5, 50], colours[1])
    bordered = np.asarray(overlay(image, label, ["x", "y"], legend=False))
    assert np.all(bordered[boundary_mask(label)] == 255)
    assert not np.all(bordered[5, 5] == 255)
    with_legend = overlay(image, label, ["x", "y"])
    assert with_legend.width > 60 and with_legend.height >= 40


def test_overlay_on_a_thin_image_grows_the_canvas_for_the_legend():
    label = np.tile(np.arange(5), (3, 40))[:, :200]  # 3 x 200, five classes
    out = overlay(np.zeros((3, 200, 3), np.uint8), label, list("abcde"))
    assert out.height > 3 and out.width > 200


def test_overlay_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), int), ["a"])


def test_legend_of_300_classes_keeps_the_image_height_and_says_how_many_more():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 300, size=(96, 96))
    names = [f"class {i}" for i in range(300)]
    out = overlay(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), label, names)
    assert out.height == 96 and out.width > 96
    rows = legend_rows(label, names, 96)
    present = len(np.unique(label))
    assert len(rows) == (96 - 2 * 8) // 20  # as many rows as fit
    assert rows[-1] == LegendRow(None, f"\u2026 {present - len(rows) + 1} more")
    by_area = [i for i, _, _ in legend_entries(label, names)]
    assert [row.index for row in rows[:-1]] == by_area[: len(rows) - 1]  # largest areas first


def test_legend_of_a_10000_class_vocabulary_and_of_one_class():
    label = np.repeat(np.arange(0, 10000, 250), 3)[None, :].repeat(64, axis=0)  # 40 present
    names = [f"c{i}" for i in range(10000)]
    out = overlay(np.zeros((*label.shape, 3), np.uint8), label, names)
    assert out.height == 64
    assert [r.text for r in legend_rows(label, names, 64)] == ["c0  2.5%", "\u2026 39 more"]
    one = legend_rows(np.zeros((64, 64), int), ["sky"], 64)
    assert one == [LegendRow(0, "sky  100.0%")]


def test_long_names_are_cut_with_an_ellipsis_and_keep_their_share():
    runs = fit_text("word " * 200 + " 12.5%", LEGEND_TEXT_WIDTH, keep=len("  12.5%"))
    text = "".join(string for string, _ in runs)
    assert text.endswith("\u2026  12.5%") and text.startswith("word word")
    assert sum(font.getlength(string) for string, font in runs) <= LEGEND_TEXT_WIDTH
    label = np.zeros((40, 60), dtype=int)
    out = overlay(np.zeros((40, 60, 3), np.uint8), label, ["word " * 200])
    assert out.width <= 60 + 3 * 8 + 14 + LEGEND_TEXT_WIDTH + 1


def test_legend_draws_non_latin_names():
    label = np.zeros((80, 60), dtype=int)
    label[:, 20:] = 1
    label[:, 40:] = 2
    out = np.asarray(overlay(np.zeros((80, 60, 3), np.uint8), label, ["собака", "猫", "🐱"]))
    panel = out[:, 60 + 8 + 14 + 8 :]
    for row in range(3):  # each line has dark text pixels
        band = panel[8 + 20 * row : 8 + 20 * (row + 1)]
        assert (band.min(axis=-1) < 128).sum() > 10
