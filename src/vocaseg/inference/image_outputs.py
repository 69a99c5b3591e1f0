"""The files ``vocaseg segment IMAGE`` writes for one image, published as a set.

- ``<name>_label.png``: the class index of every pixel (palette PNG up to 256 classes, 16-bit
  grayscale above; :func:`vocaseg.viz.label_png`);
- ``<name>_overlay.png``: class colours, boundaries and an area-sorted legend
  (:func:`vocaseg.viz.overlay`);
- ``<name>.json``: the run's record (:func:`run_record`: model, weights, CLIP source, background
  protocol, settings) with the image's size and per-class pixel fractions.

The three are written under temporary names first; only when all are on disk are they renamed,
the JSON last, so a JSON beside its two PNGs means a complete set (what ``--skip-existing``
checks). An earlier set of the same name loses its JSON before the renames start, and Ctrl-C
(SIGINT) or SIGTERM waits until the renames are done (its handler is deferred), so no image is
left with only some of its outputs, old or new.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vocaseg.errors import UserError
from vocaseg.io import atomic_path
from vocaseg.viz import label_png, overlay

if TYPE_CHECKING:
    from vocaseg.inference.segmenter import SegmentationResult, Segmenter
    from vocaseg.text.vocab import Vocabulary

#: The outputs of one image, in the order they are published (the JSON, the completion mark, last).
OUTPUT_KINDS = ("label", "overlay", "json")
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def output_paths(out_dir: str | os.PathLike, name: str | os.PathLike) -> dict[str, Path]:
    """The files :func:`write_image_outputs` writes for ``name`` (e.g. ``"cat"``, ``"sub/cat"``)."""
    base = Path(out_dir) / name
    return {
        "label": base.with_name(base.name + "_label.png"),
        "overlay": base.with_name(base.name + "_overlay.png"),
        "json": base.with_name(base.name + ".json"),
    }


def outputs_complete(paths: dict[str, Path]) -> bool:
    """True when every file of a set exists (the JSON is only published after the others)."""
    return all(path.is_file() for path in paths.values())


def run_record(
    segmenter: Segmenter,
    model: str | os.PathLike | None,
    weights: str | os.PathLike | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """What every output JSON of a run records: the model and weights as named, the CLIP they
    stand on (:attr:`clip_source`: weights, SHA-256, architecture), the background protocol, the
    settings given (``--set``), the background class and the classes the protocol added."""
    from vocaseg import __version__

    vocabulary, requested = segmenter.vocabulary, segmenter.requested
    if vocabulary is None or requested is None:
        raise UserError("no vocabulary set; call set_vocabulary([...]) first")
    return {
        "model": None if model is None else str(model),
        "weights": None if weights is None else str(weights),
        "clip": segmenter.model.clip_source,
        "background": segmenter.model.background.record(),
        "settings": dict(settings),
        "background_class": vocabulary.background,
        "added_classes": vocabulary.class_names[len(requested) :],
        "vocaseg": __version__,
    }


def write_image_outputs(
    paths: dict[str, Path],
    image: np.ndarray,
    result: SegmentationResult,
    vocabulary: Vocabulary,
    record: dict[str, Any],
    colours: np.ndarray,
    alpha: float = 0.5,
    published: Callable[[], None] | None = None,
) -> None:
    """Write the label PNG, the overlay of ``image`` [H, W, 3] and the JSON (``record`` plus the
    image's height, width and the classes of ``vocabulary`` with their names and areas) to
    ``paths``, as one set (see the module docstring). An ``OSError`` (e.g. a full disk) leaves
    the folder as it was or, past the first rename, without any file of this set.
    ``published`` is called once the set is complete, before a Ctrl-C that waited is raised."""
    height, width = result.label.shape
    content = {
        **record,
        "height": height,
        "width": width,
        "classes": [
            {"index": i, "name": names[0], "names": list(names), "area": float(area)}
            for i, (names, area) in enumerate(zip(vocabulary.classes, result.areas))
        ],
    }
    hold = _SignalHold()
    renaming = complete = False
    try:
        with ExitStack() as stack:  # exits in reverse: renames the label, the overlay, the JSON
            json_tmp = stack.enter_context(atomic_path(paths["json"]))
            overlay_tmp = stack.enter_context(atomic_path(paths["overlay"]))
            label_tmp = stack.enter_context(atomic_path(paths["label"]))
            label_png(result.label, colours).save(label_tmp, format="PNG")
            picture = overlay(image, result.label, result.class_names, alpha, colours)
            picture.save(overlay_tmp, format="PNG")
            with open(json_tmp, "w", encoding="utf-8") as handle:
                json.dump(content, handle, indent=2, ensure_ascii=False)
                handle.write("\n")
            hold.hold()  # from here to the last rename, Ctrl-C waits
            paths["json"].unlink(missing_ok=True)  # an earlier set stops counting as complete
            renaming = True
        complete = True
        if published is not None:
            published()
    except BaseException:
        if renaming and not complete:  # some files may be renamed: leave no part of the set
            for kind in OUTPUT_KINDS[:-1]:
                paths[kind].unlink(missing_ok=True)
        raise
    finally:
        hold.release()  # a Ctrl-C that waited is raised here, after the set is complete


class _SignalHold:
    """Defers SIGINT and SIGTERM from :meth:`hold` to :meth:`release`, which restores their
    handlers and raises what arrived meanwhile (Ctrl-C's KeyboardInterrupt). Python runs signal
    handlers in the main thread only, so elsewhere both do nothing."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] | None = None
        self._arrived: list[int] = []

    def hold(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._defer) for sig in _HELD_SIGNALS}

    def _defer(self, signum: int, frame: Any) -> None:
        self._arrived.append(signum)

    def release(self) -> None:
        if self._previous is None:
            return
        previous, self._previous = self._previous, None
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for sig in dict.fromkeys(self._arrived):
            signal.raise_signal(sig)
