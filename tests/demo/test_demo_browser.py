"""The demo in a real browser: headless Debian Chromium driven by Playwright against ``vocaseg demo``'s
page, served with a tiny random CLIP on a free port in a background thread.

Runs by default; skipped (with the reason) when Gradio, Playwright or /usr/bin/chromium is missing.
Playwright never downloads a browser here: it launches the system Chromium.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vocaseg.clip.model import CLIP, CLIPConfig
from vocaseg.inference.segmenter import Segmenter

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)"
    ),
]
pytest.importorskip("gradio", reason="the demo needs Gradio (pip install 'vocaseg[demo]')")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs Playwright (pip install playwright)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """URL of the demo page, served in a background thread with a tiny random ViT CLIP."""
    from vocaseg.demo import build_app, launch

    folder = tmp_path_factory.mktemp("demo-server")
    config = CLIPConfig(
        embed_dim=32, image_size=32, vision_layers=2, vision_width=64, vision_patch_size=16,
        vision_heads=4, text_width=32, text_layers=2, text_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    torch.save(CLIP(config).eval().state_dict(), folder / "tiny_clip.pt")
    segmenter = Segmenter.from_pretrained(
        "maskclip", weights=folder / "tiny_clip.pt", short_side=64, window=32,
        stride=16, templates="single",
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder / "gradio"))
        app = build_app(segmenter)
        url = launch(app, port=_free_port())
        yield url
        app.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the demo; every address it asks for is recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.goto(server)
    page.get_by_role("button", name="Segment", exact=True).wait_for()
    yield page
    context.close()


def _status(page) -> str:
    return page.locator("#status textarea").input_value()


def test_upload_segment_and_download(page, server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    upload = folder / "street.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 88, 3), dtype=np.uint8)).save(upload)

    page.locator("#image-input input[type=file]").set_input_files(upload)
    page.locator("#image-input img[src*='street.png']").wait_for()  # upload finished
    page.get_by_label("Classes", exact=True).fill("cat, sofa; couch, floor")
    page.get_by_role("button", name="Segment", exact=True).click()

    page.wait_for_function("document.querySelector('#status textarea').value.length > 0")
    assert _status(page).startswith("Segmented street.png (88x60) into 3 classes"), _status(page)
    page.locator("#overlay img").wait_for()
    for name in ("cat", "sofa", "floor"):  # every class of the vocabulary, by its first name
        sync_api.expect(page.locator("#table")).to_contain_text(name, use_inner_text=True)
    with page.expect_download() as download:
        page.locator("#label-file a[download]").click()
    label = Image.open(download.value.path())
    assert label.size == (88, 60) and int(np.array(label).max()) < 3

    screenshot = folder / "demo_page.png"
    page.screenshot(path=screenshot, full_page=True)
    print(f"screenshot of the demo page: {screenshot}")
    # offline-capable: the page asked nothing of any other host
    foreign = [u for u in page.requested if not u.startswith((server, "data:", "blob:"))]
    assert not foreign, foreign


def test_empty_vocabulary_shows_the_message(page):
    page.get_by_label("Classes", exact=True).fill("")
    page.get_by_role("button", name="Segment", exact=True).click()
    page.wait_for_function("document.querySelector('#status textarea').value.length > 0")
    assert _status(page).startswith("Error: the Classes box is empty;"), _status(page)
    assert "Traceback" not in page.content()
