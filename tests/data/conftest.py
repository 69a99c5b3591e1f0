"""Fixtures of the data-layer tests."""

from __future__ import annotations

import pytest
from PIL import Image

from vocaseg.data import imageio


@pytest.fixture
def pixel_limit(monkeypatch):
    """Restores the readers' pixel limit (and PIL's) after a test that changes it."""
    monkeypatch.setattr(imageio, "_max_pixels", imageio._max_pixels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
