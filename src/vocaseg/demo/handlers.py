"""What the demo page does per request, without Gradio: read the settings, parse the vocabulary,
segment the image, threshold to "background", and write the label PNG and the JSON record.

The page (``vocaseg.demo.app``) only wires these functions to widgets, so they are unit-tested
directly. Every user mistake raises a :class:`vocaseg.errors.UserError` whose one-line message the
page shows; :func:`guarded` turns any other exception into a short generic message (the traceback
goes to the log, never to the page).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import numpy as np
import torch
from PIL import Image

from vocaseg.errors import ImageError, UserError, VocabularyError
from vocaseg.inference.images import read_image
from vocaseg.inference.segmenter import Segmenter
from vocaseg.io import atomic_path, write_json
from vocaseg.text.vocab import Vocabulary
from vocaseg.viz import label_png, make_palette, overlay

log = logging.getLogger("vocaseg.demo")

#: Most classes one request may name (each is a text-encoder pass and a score map per pixel).
MAX_CLASSES = 1000
#: Most bytes of float32 class scores one image may need (queries x height x width x 4).
MAX_SCORE_BYTES = 4 * 1024**3
WINDOW, WHOLE = "sliding window", "whole image"
BACKGROUND = "background"
TABLE_HEADERS = ["class", "share of image (%)"]

T = TypeVar("T")


@dataclass(frozen=True)
class DemoSettings:
    """What the page can change without reloading the model.

    ``prob_thd`` in [0, 1]: pixels whose best class probability is below it become "background"
    (0 = off). ``whole_image``: run the model on the whole resized image instead of its sliding
    windows.
    """

    prob_thd: float = 0.0
    whole_image: bool = False

    @classmethod
    def from_widgets(cls, prob_thd: float | None, mode: str | None) -> DemoSettings:
        thd = float(prob_thd or 0.0)
        if not 0.0 <= thd <= 1.0:
            raise UserError(f"the background threshold must lie in [0, 1], got {thd}")
        return cls(prob_thd=thd, whole_image=mode == WHOLE)

    def record(self) -> dict[str, Any]:
        return {"prob_thd": self.prob_thd, "inference": WHOLE if self.whole_image else WINDOW}


# The window settings each model was built with, remembered the first time settings are applied.
_DEFAULT_WINDOW: WeakKeyDictionary[torch.nn.Module, tuple[int | None, int | None]] = (
    WeakKeyDictionary()
)


def apply_settings(segmenter: Segmenter, settings: DemoSettings) -> None:
    """Put ``settings`` into effect for the next request: the one place the demo changes the model.

    Through ``Segmenter.update_settings`` (the same keys as ``--set``): ``window`` 0 for the whole
    image or the model's own window, and ``prob_thd`` (below it, pixels become "background", a
    class added to the vocabulary when the user named none). Nothing is changed, and no cache is
    dropped, when the settings are the ones in effect.
    """
    config = segmenter.model.config
    window, stride = _DEFAULT_WINDOW.setdefault(segmenter.model, (config.window, config.stride))
    wanted = {
        "window": 0 if settings.whole_image else (window or 0),
        "stride": 0 if settings.whole_image else (stride or 0),
        "prob_thd": settings.prob_thd,
    }
    current = {
        "window": config.window or 0,
        "stride": config.stride or 0,
        "prob_thd": config.prob_thd,
    }
    if wanted != current:
        segmenter.update_settings(**wanted)


def parse_classes(text: str | None) -> Vocabulary:
    """The Classes box (``"cat, sofa; couch, floor"``) as a vocabulary of at most MAX_CLASSES."""
    if not text or not text.replace(",", " ").replace(";", " ").strip():
        raise VocabularyError(
            "the Classes box is empty; type class names separated by commas, synonyms by "
            "semicolons, e.g. cat, sofa; couch, floor"
        )
    vocabulary = Vocabulary.parse(text)
    if len(vocabulary) > MAX_CLASSES:
        raise VocabularyError(
            f"{len(vocabulary)} classes named; the demo takes at most {MAX_CLASSES} per request "
            "(use 'vocaseg segment --classes-file' for more)"
        )
    return vocabulary


def uploaded_path(payload: Any) -> tuple[Path, str]:
    """(file path, name to show) of an upload: a Gradio file payload, a path, or nothing."""
    if isinstance(payload, dict):
        path = payload.get("path")
        name = payload.get("orig_name") or (Path(path).name if path else None)
    else:
        path = payload
        name = Path(payload).name if payload else None
    if not path:
        raise ImageError("no image given; upload one (JPEG, PNG, WebP, ...) or pick the example")
    return Path(path), str(name)


def read_upload(payload: Any) -> tuple[np.ndarray, str]:
    """The uploaded image as RGB uint8 [H, W, 3] (read as ``vocaseg segment`` reads files)."""
    path, name = uploaded_path(payload)
    try:
        return np.asarray(read_image(path)), name
    except ImageError as err:  # name the upload, not the server's temporary copy
        raise ImageError(str(err).replace(str(path), repr(name))) from None


def check_memory(height: int, width: int, vocabulary: Vocabulary) -> None:
    """Refuse images whose per-class score maps would not fit MAX_SCORE_BYTES."""
    needed = len(vocabulary.queries) * height * width * 4
    if needed > MAX_SCORE_BYTES:
        megapixels = MAX_SCORE_BYTES / (4 * len(vocabulary.queries)) / 1e6
        raise ImageError(
            f"a {width}x{height} image with {len(vocabulary.queries)} class names needs "
            f"{needed / 1024**3:.0f} GiB of scores; use fewer classes or an image of at most "
            f"{megapixels:.1f} megapixels"
        )


@dataclass
class Labelled:
    """A label map [H, W] and its classes (names per class; area fraction per class)."""

    label: np.ndarray
    classes: tuple[tuple[str, ...], ...]
    areas: np.ndarray

    @property
    def class_names(self) -> list[str]:
        return [names[0] for names in self.classes]


def labelled(segmenter: Segmenter, result: Any) -> Labelled:
    """The result's labels with the classes they index (a "background" class the settings added
    included)."""
    return Labelled(result.label, segmenter.vocabulary.classes, result.areas)


@dataclass
class ImageAnswer:
    """Everything the page shows for one image."""

    overlay: Image.Image
    table: list[list[Any]]
    label_path: Path
    json_path: Path
    message: str


def segment_image(
    segmenter: Segmenter,
    payload: Any,
    classes_text: str | None,
    settings: DemoSettings,
    out_dir: Path,
    source: dict[str, Any] | None = None,
) -> ImageAnswer:
    """Segment one uploaded image and write ``<stem>_label.png`` and ``<stem>.json`` to ``out_dir``.

    ``source`` (``{"model": ..., "weights": ...}``) goes into the JSON record, which has the fields
    ``vocaseg segment`` writes plus the demo settings.
    """
    start = time.perf_counter()
    vocabulary = parse_classes(classes_text)
    image, name = read_upload(payload)
    check_memory(image.shape[0], image.shape[1], vocabulary)
    apply_settings(segmenter, settings)
    segmenter.set_vocabulary(vocabulary)  # text embeddings cached per vocabulary
    answer = labelled(segmenter, segmenter.predict_arrays([image])[0])
    colours = make_palette(len(answer.classes))
    stem = out_dir / _safe_stem(name)
    label_path = stem.with_name(stem.name + "_label.png")
    with atomic_path(label_path) as tmp:
        label_png(answer.label, colours).save(tmp, format="PNG")
    json_path = stem.with_name(stem.name + ".json")
    write_json(json_path, result_record(segmenter, name, answer, settings, source or {}))
    picture = overlay(image, answer.label, answer.class_names, 0.5, colours)
    table = [[n, round(100 * float(a), 2)] for n, a in zip(answer.class_names, answer.areas)]
    height, width = answer.label.shape
    seconds = time.perf_counter() - start
    message = (
        f"Segmented {name} ({width}x{height}) into {len(vocabulary)} classes in {seconds:.1f} s."
    )
    return ImageAnswer(picture, table, label_path, json_path, message)


@dataclass
class VideoAnswer:
    """Everything the page shows for one video."""

    video_path: Path
    table: list[list[Any]]
    message: str


def segment_video(
    segmenter: Segmenter,
    payload: Any,
    classes_text: str | None,
    settings: DemoSettings,
    out_dir: Path,
) -> VideoAnswer:
    """Segment the frames of an uploaded video (see :func:`vocaseg.demo.video.overlay_video`)."""
    from vocaseg.demo.video import MAX_FRAMES, overlay_video

    start = time.perf_counter()
    vocabulary = parse_classes(classes_text)
    path, name = uploaded_path(payload)
    apply_settings(segmenter, settings)
    segmenter.set_vocabulary(vocabulary)

    def label_frame(frame: np.ndarray) -> tuple[np.ndarray, list[str]]:
        check_memory(frame.shape[0], frame.shape[1], vocabulary)
        answer = labelled(segmenter, segmenter.predict_arrays([frame])[0])
        return answer.label, answer.class_names

    target = out_dir / f"{_safe_stem(name)}_overlay.mp4"
    try:
        frames, areas, names = overlay_video(path, target, label_frame)
    except ImageError as err:
        raise ImageError(f"{name!r}: {err}") from None
    table = [[n, round(100 * float(a), 2)] for n, a in zip(names, areas)]
    seconds = time.perf_counter() - start
    cut = f" (the first {MAX_FRAMES})" if frames == MAX_FRAMES else ""
    message = f"Segmented {frames} frames{cut} of {name} in {seconds:.1f} s."
    return VideoAnswer(target, table, message)


def result_record(
    segmenter: Segmenter,
    name: str,
    labelled: Labelled,
    settings: DemoSettings,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The JSON of one image: the fields ``vocaseg segment`` writes, plus the page's settings."""
    from vocaseg.inference.image_outputs import run_record

    height, width = labelled.label.shape
    record = run_record(
        segmenter, source.get("model"), source.get("weights"), source.get("settings", {})
    )
    return {
        "image": name,
        **record,
        "height": height,
        "width": width,
        "classes": [
            {"index": i, "name": names[0], "names": list(names), "area": float(area)}
            for i, (names, area) in enumerate(zip(labelled.classes, labelled.areas))
        ],
        "demo": settings.record(),
    }


def _safe_stem(name: str) -> str:
    """A file stem from an upload's name: letters, digits, ``-``, ``_`` and ``.`` only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")
    return stem or "image"


def guarded(fn: Callable[..., T], *args: Any) -> tuple[T | None, str]:
    """``(fn(*args), "")``, or ``(None, message)``: a user mistake's own one-line message, or a
    short generic one for anything else (whose traceback is logged, never shown)."""
    try:
        return fn(*args), ""
    except UserError as err:
        return None, f"Error: {err}"
    except Exception:
        log.exception("demo request failed")
        return None, "Error: something went wrong on the server; the details are in its log."
