"""The demo page: a Gradio Blocks app over a loaded :class:`vocaseg.Segmenter`.

An image (the bundled photo preloaded), a **Classes** box with example vocabularies, a settings panel
(background threshold, sliding window or whole image) and a **Segment** button; back come the overlay
with its legend, a table of every class with its share of the image, and the label PNG and JSON as
downloads. A video tab appears when PyAV is installed. Requests run one at a time (one queue slot
shared by image and video), so concurrent users wait instead of exhausting memory.

Offline: analytics and the version check are off, server-side rendering, MCP and sharing are never
started, and the page's fonts and scripts are served by the app itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocaseg.demo.handlers import (
    TABLE_HEADERS,
    WHOLE,
    WINDOW,
    DemoSettings,
    guarded,
    segment_image,
    segment_video,
)
from vocaseg.demo.video import MAX_FRAMES, video_available
from vocaseg.errors import UserError
from vocaseg.inference.segmenter import Segmenter

if TYPE_CHECKING:
    import gradio as gr

#: Vocabularies offered under the Classes box (the first one is filled in).
EXAMPLE_VOCABULARIES = (
    "cat, blanket; sofa, wall",
    "cat; kitten, dog; puppy, person, background",
    "sky, tree, grass, building, road, car, person",
    "cat, floor, window, plant; flower, lamp",
)
#: Requests waiting in the queue beyond which new ones are turned away.
QUEUE_SIZE = 16
#: Seconds the files of a request are kept (Gradio has copied them into its own cache long before).
KEEP_SECONDS = 3600


def bundled_examples() -> list[Path]:
    """The example photo of a source checkout (``examples/chelsea.png``), if present."""
    photo = Path(__file__).resolve().parents[3] / "examples" / "chelsea.png"
    return [photo] if photo.is_file() else []


def request_folder(workdir: Path) -> Path:
    """A new folder for one request's files; folders older than KEEP_SECONDS are removed."""
    for old in workdir.iterdir():
        if time.time() - old.stat().st_mtime > KEEP_SECONDS:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=workdir))


def import_gradio() -> Any:
    """Gradio, with analytics and its version check off (they would call the internet)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError(
            "the demo needs Gradio, which is not installed; run: pip install 'vocaseg[demo]'"
        ) from None
    return gradio


def build_app(
    segmenter: Segmenter,
    examples: Sequence[str | os.PathLike] | None = None,
    *,
    vocabularies: Sequence[str] = EXAMPLE_VOCABULARIES,
    source: dict[str, Any] | None = None,
) -> gr.Blocks:
    """The demo page for ``segmenter`` (already loaded; nothing is loaded here), queued.

    ``examples``: image paths offered on the page, the first one preloaded (default: the bundled
    photo). ``source`` (``{"model": ..., "weights": ...}``) is recorded in each JSON download.
    Serve it with :func:`launch` or mount it in a FastAPI app (``gradio.mount_gradio_app``).
    """
    gr = import_gradio()
    images = [str(p) for p in (bundled_examples() if examples is None else examples)]
    source = dict(source or {"model": segmenter.model.name})
    default = segmenter.model.preprocess
    window_info = (
        f"{WINDOW}: {default.window} px windows every {default.stride} px (the model's setting)"
        if default.window
        else "this model runs on the whole image"
    )
    with gr.Blocks(title="vocaseg demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "## vocaseg: open-vocabulary segmentation\n"
            "Name the classes to find, separated by commas; synonyms of one class by semicolons."
        )
        classes = gr.Textbox(
            label="Classes",
            value=vocabularies[0] if vocabularies else "",
            placeholder="cat, sofa; couch, floor",
            elem_id="classes",
        )
        if vocabularies:
            gr.Examples([[v] for v in vocabularies], inputs=[classes], label="Example vocabularies")
        with gr.Accordion("Settings (no reload needed)", open=False):
            prob_thd = gr.Slider(
                0.0,
                1.0,
                value=0.0,
                step=0.01,
                label="Background threshold (prob_thd)",
                info="pixels whose best class probability is below it become 'background' (0: off)",
            )
            mode = gr.Radio(
                [WINDOW, WHOLE],
                value=WINDOW if default.window else WHOLE,
                label="Inference",
                info=window_info,
                interactive=bool(default.window),
            )
        workdir = Path(tempfile.mkdtemp(prefix="vocaseg-demo-"))
        weakref.finalize(app, shutil.rmtree, workdir, True)

        def on_image(image: Any, text: str, thd: float, how: str) -> tuple[Any, ...]:
            answer, message = guarded(
                lambda: segment_image(
                    segmenter,
                    image,
                    text,
                    DemoSettings.from_widgets(thd, how),
                    request_folder(workdir),
                    source,
                )
            )
            if answer is None:
                return None, None, None, None, message
            paths = str(answer.label_path), str(answer.json_path)
            return answer.overlay, answer.table, *paths, answer.message

        def on_video(video: Any, text: str, thd: float, how: str) -> tuple[Any, ...]:
            answer, message = guarded(
                lambda: segment_video(
                    segmenter,
                    video,
                    text,
                    DemoSettings.from_widgets(thd, how),
                    request_folder(workdir),
                )
            )
            if answer is None:
                return None, None, message
            return str(answer.video_path), answer.table, answer.message

        with gr.Tabs():
            with gr.Tab("Image"), gr.Row():
                with gr.Column():
                    image = gr.Image(
                        value=images[0] if images else None,
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        label="Image",
                        elem_id="image-input",
                    )
                    if len(images) > 1:
                        gr.Examples([[p] for p in images], inputs=[image], label="Example images")
                    segment = gr.Button("Segment", variant="primary", elem_id="segment")
                with gr.Column():
                    status = gr.Textbox(label="Message", interactive=False, elem_id="status")
                    picture = gr.Image(
                        label="Overlay",
                        type="pil",
                        format="png",
                        interactive=False,
                        buttons=["download", "fullscreen"],  # no "share" (to Hugging Face)
                        elem_id="overlay",
                    )
                    table = gr.Dataframe(
                        headers=TABLE_HEADERS,
                        interactive=False,
                        label="Share of the image per class",
                        elem_id="table",
                    )
                    label_file = gr.File(label="Label PNG", interactive=False, elem_id="label-file")
                    json_file = gr.File(label="JSON", interactive=False, elem_id="json-file")
            segment.click(
                on_image,
                [image, classes, prob_thd, mode],
                [picture, table, label_file, json_file, status],
                api_name="segment",
                preprocess=False,  # the handler reads the upload itself (clear errors, CLI parity)
                concurrency_limit=1,
                concurrency_id="model",
            )
            if video_available():
                with gr.Tab("Video"), gr.Row():
                    with gr.Column():
                        video = gr.Video(sources=["upload"], label="Video", elem_id="video-input")
                        run_video = gr.Button("Segment video", variant="primary")
                        gr.Markdown(f"Frames are segmented one by one; at most {MAX_FRAMES}.")
                    with gr.Column():
                        video_status = gr.Textbox(label="Message", interactive=False)
                        video_out = gr.Video(label="Overlay video", interactive=False)
                        video_table = gr.Dataframe(
                            headers=TABLE_HEADERS,
                            interactive=False,
                            label="Share of the image per class",
                        )
                run_video.click(
                    on_video,
                    [video, classes, prob_thd, mode],
                    [video_out, video_table, video_status],
                    api_name="segment_video",
                    preprocess=False,
                    concurrency_limit=1,
                    concurrency_id="model",
                )
    return app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Serve ``app`` on ``host:port`` in a background thread (never shared publicly); returns the
    page's address. ``app.block_thread()`` waits until Ctrl+C, ``app.close()`` stops the server."""
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            prevent_thread_lock=True,
            quiet=True,
            show_error=False,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
            max_file_size="200mb",
        )
    except OSError as err:
        raise UserError(f"cannot serve on {host}:{port} ({err}); pick another --port") from None
    return app.local_url or f"http://{host}:{port}/"
