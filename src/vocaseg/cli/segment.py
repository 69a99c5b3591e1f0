"""``vocaseg segment``: segment images, videos and folders into classes named on the command line.

Per image it writes ``<name>_label.png``, ``<name>_overlay.png`` and ``<name>.json`` as one set
(:mod:`vocaseg.inference.image_outputs`); per video ``<name>_overlay.mp4``,
``<name>_labels.zip`` and ``<name>.json`` (:mod:`vocaseg.inference.video_outputs`). Runs
:class:`vocaseg.Segmenter`, so the results equal the Python API's.

Which inputs run under which output names is :mod:`vocaseg.cli.segment_inputs`. Exit codes: 0 done,
1 some inputs unreadable, 2 a usage error (from ``vocaseg.cli.main``), 3 a write error (disk full),
130 interrupted; an interrupted or failed run leaves only complete sets.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from vocaseg.cli.options import (
    add_device_options,
    add_max_pixels_option,
    add_model_options,
    add_vocabulary_options,
    apply_max_pixels,
    check_writable,
    model_settings,
    read_vocabulary,
    resolve_model,
)
from vocaseg.cli.segment_inputs import Job, count, note, plan_jobs
from vocaseg.cli.streams import pipe_safe_streams
from vocaseg.device import resolve_device
from vocaseg.errors import ImageError, UserError, VideoError

if TYPE_CHECKING:
    from vocaseg.text.vocab import Vocabulary

EXIT_UNREADABLE, EXIT_WRITE, EXIT_INTERRUPTED = 1, 3, 130

EPILOG = """\
vocabulary syntax: classes are separated by commas (or lines in --classes-file), synonyms of
one class by semicolons: "cat, sofa; couch, floor" is three classes.

inputs: image files, video files (mp4, mov, webm, mkv, avi, ...; needs pip install
'vocaseg[video]'), animated GIFs (segmented as videos) and folders of them. --recursive also
reads sub-folders; --video reads each folder as one video of numbered frames (frame2.png before
frame10.png). The same file named twice is segmented once.

outputs, in -o: per image NAME_label.png (class index per pixel), NAME_overlay.png (colours and
legend) and NAME.json (model, weights, settings, classes and their areas); per video
NAME_overlay.mp4, NAME_labels.zip (one label PNG per frame) and NAME.json (areas per frame).
NAME is the input's stem (with --recursive, below its sub-folder); when two inputs share one,
the later get NAME_2, NAME_3, ... Files in -o that an earlier run wrote are not inputs. Each set
is published whole (the JSON last): an interrupted or failed run never leaves part of a set, and
--skip-existing continues where it stopped.

exit status:
  0    every input segmented (or skipped by --skip-existing)
  1    some inputs could not be read (the others are written; a summary line names the failures)
  2    a usage error: bad option or vocabulary, missing weights, unknown model, unwritable output
       folder, no readable input at all, or videos only and the [video] extra missing (beside
       images, a video that cannot be read is a failure of kind 1)
  3    writing an output failed (disk full, write error); the line names the path and the reason,
       and every set written before is complete
  130  interrupted (Ctrl-C); every set written is complete
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment images or videos into classes named in plain text",
        description="Segment images and videos (files or folders) into the classes you name. "
        "Writes a label map, an overlay with a legend and per-class areas (JSON) for every input.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="images, videos or folders of them"
    )
    add_vocabulary_options(parser)
    add_model_options(parser, "--set short_side=448 --set window=0")
    parser.add_argument(
        "-o", "--output", default="vocaseg_out", help="output folder (default vocaseg_out)"
    )
    add_device_options(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="overlay colour weight, 0 to 1 (0.5)"
    )
    parser.add_argument(
        "--recursive", action="store_true", help="also segment the files in sub-folders"
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip inputs whose outputs are complete in -o (continue an interrupted run)",
    )
    add_max_pixels_option(parser)
    video = parser.add_argument_group("videos")
    video.add_argument(
        "--video", action="store_true", help="read each folder as one video of numbered frames"
    )
    video.add_argument(
        "--every", type=int, default=1, metavar="N", help="segment every N-th frame (1)"
    )
    video.add_argument("--start", type=float, metavar="SEC", help="start time in seconds")
    video.add_argument("--end", type=float, metavar="SEC", help="end time in seconds")
    video.add_argument(
        "--smoothing",
        type=int,
        default=0,
        metavar="N",
        help="average class scores over the last N segmented frames (0: off)",
    )
    video.add_argument("--fps", type=float, help="frame rate of a folder of frames (default 25)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with pipe_safe_streams():  # a reader that goes away (| head) does not stop the work
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    apply_max_pixels(args)
    vocabulary = read_vocabulary(args)
    out_dir = Path(args.output)
    jobs = plan_jobs(args, out_dir)
    if jobs and all(job.video for job in jobs):
        from vocaseg.inference.video_io import import_av

        import_av()  # a missing [video] extra stops here (with images, only the videos fail)
    video_options = args.every != 1 or args.start or args.end or args.smoothing or args.fps
    if video_options and not any(job.video for job in jobs):
        note("--every, --start, --end, --smoothing and --fps apply to videos; none was given")
    created = not out_dir.exists()
    check_writable(out_dir, "-o/--output")
    try:
        return _Run(args, out_dir, jobs).execute(vocabulary)
    finally:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that wrote nothing leaves no empty folder behind


def _check_options(args: argparse.Namespace) -> None:
    """One line for every option out of range, before anything is read or loaded."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha is the colour's weight, from 0 to 1; got {args.alpha}")
    if args.every < 1:
        raise UserError(f"--every must be at least 1 (1: every frame), got {args.every}")
    if args.smoothing < 0:
        raise UserError(f"--smoothing must be 0 (off) or a number of frames, got {args.smoothing}")
    if args.start is not None and not (args.start >= 0 and math.isfinite(args.start)):
        raise UserError(f"--start must be 0 or more seconds, got {args.start}")
    if args.end is not None and not args.end > (args.start or 0.0):
        raise UserError(f"--end ({args.end} s) must come after --start ({args.start or 0} s)")
    if args.fps is not None and not (args.fps > 0 and math.isfinite(args.fps)):
        raise UserError(f"--fps must be a positive frame rate, got {args.fps}")
    resolve_device(args.device)  # an unknown or absent device: before the model loads
    if args.video and args.recursive:
        raise UserError(
            "--video reads each folder as one video and --recursive reads the files of "
            "sub-folders as separate inputs; pass one of them"
        )


class OutputWriteError(Exception):
    """Writing ``path`` failed with ``error`` (an OSError: disk full, read-only, I/O error)."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(str(path))
        self.path, self.error = path, error


class _Run:
    """One ``vocaseg segment`` run: segment the jobs, count what was written, report."""

    def __init__(self, args: argparse.Namespace, out_dir: Path, jobs: list[Job]) -> None:
        self.args, self.out_dir, self.jobs = args, out_dir, jobs
        self.failures: list[str] = []
        self.written = Counter[str]()  # "image" / "video" -> sets written
        self.segmenter: Any = None  # built by _segment, with what it needs:
        self.record: dict[str, Any] = {}  # what every JSON records about the run
        self.colours: Any = None  # the palette [K, 3]

    def execute(self, vocabulary: Vocabulary) -> int:
        todo = self._not_done() if self.args.skip_existing else self.jobs
        skipped = len(self.jobs) - len(todo)
        if not todo:
            print(
                f"nothing to do: every input ({skipped}) has complete outputs in {self.out_dir} "
                "(--skip-existing)"
            )
            return 0
        try:
            self._segment(todo, vocabulary)
        except OutputWriteError as err:
            sys.stderr.write(f"error: {self._write_error_line(err)}\n")
            return EXIT_WRITE
        except KeyboardInterrupt:
            sys.stderr.write(
                f"interrupted: {self._written_text()} written to {self.out_dir}, each complete; "
                "continue with --skip-existing\n"
            )
            return EXIT_INTERRUPTED
        return self._report(todo, skipped)

    def _not_done(self) -> list[Job]:
        return [job for job in self.jobs if not _complete(self.out_dir, job)]

    def _segment(self, jobs: list[Job], vocabulary: Vocabulary) -> None:
        from vocaseg.inference.image_outputs import run_record
        from vocaseg.inference.segmenter import Segmenter
        from vocaseg.viz import make_palette

        segmenter = Segmenter(
            resolve_model(self.args), device=self.args.device, dtype=self.args.dtype
        )
        segmenter.set_vocabulary(vocabulary)
        self.segmenter = segmenter
        self.record = run_record(
            segmenter, self.args.model, self.args.weights, model_settings(self.args)
        )
        self.colours = make_palette(len(segmenter.class_names))
        images = [job for job in jobs if not job.video]
        if images:
            self._segment_images(images)
        for job in jobs:
            if job.video:
                self._segment_video(job)

    def _segment_images(self, jobs: list[Job]) -> None:
        from vocaseg.inference.images import read_image

        pending: list[tuple[Job, Any]] = []  # decoded, waiting for a batch of one size
        bar = tqdm(jobs, desc="segment", unit="image", disable=len(jobs) < 2)
        try:
            for job in bar:
                try:
                    array = np.asarray(read_image(job.path))
                except ImageError as err:
                    self.failures.append(str(err))  # names the file
                    continue
                full = len(pending) >= self.args.batch_size
                if pending and (array.shape != pending[0][1].shape or full):
                    self._flush(pending)
                pending.append((job, array))
            self._flush(pending)  # images read before an unreadable one are written too
        finally:
            bar.close()

    def _flush(self, pending: list[tuple[Job, Any]]) -> None:
        from vocaseg.inference.image_outputs import output_paths, write_image_outputs

        if not pending:
            return
        results = self.segmenter.predict_arrays([array for _, array in pending])
        for (job, array), result in zip(pending, results):
            paths = output_paths(self.out_dir, job.name)
            record = {"image": str(job.path), **self.record}
            with _writing(paths["label"].with_name(f"{job.name.name}_*")):
                write_image_outputs(
                    paths,
                    array,
                    result,
                    self.segmenter.vocabulary,
                    record,
                    self.colours,
                    self.args.alpha,
                    published=self._count_image,
                )
        pending.clear()

    def _count_image(self) -> None:
        self.written["image"] += 1

    def _segment_video(self, job: Job) -> None:
        from vocaseg.inference.video_outputs import output_paths, write_video_outputs

        folder = self.out_dir / job.name.parent
        try:
            with _writing(output_paths(folder, job.name.name)["overlay"]):
                summary = write_video_outputs(
                    self.segmenter,
                    job.path,
                    folder,
                    job.name.name,
                    alpha=self.args.alpha,
                    every=self.args.every,
                    start=self.args.start,
                    end=self.args.end,
                    smoothing=self.args.smoothing,
                    batch_size=self.args.batch_size,
                    fps=self.args.fps,
                    record=self.record,
                )
        except (VideoError, ImageError) as err:  # not a video, no stream, codec, no PyAV
            text = str(err)
            self.failures.append(text if str(job.path) in text else f"{job.path}: {text}")
            return
        for line in summary["notes"]:
            note(f"{job.path}: {line}")
        self.written["video"] += 1

    def _report(self, todo: list[Job], skipped: int) -> int:
        kinds = {job.video for job in todo}
        noun = "inputs" if len(kinds) == 2 else ("videos" if kinds == {True} else "images")
        skip_note = f"; {count(skipped, 'input')} skipped (complete outputs already there)"
        if not self.failures:
            print(
                f"segmented {self._written_text()} into {self.out_dir}{skip_note * bool(skipped)}"
            )
            return 0
        if len(self.failures) == len(todo) and not skipped:
            if len(todo) == 1:
                raise UserError(self.failures[0])
            raise UserError(f"no input could be read: {'; '.join(self.failures)}")
        written = self._written_text() if len(kinds) == 2 else str(sum(self.written.values()))
        sys.stderr.write(
            f"error: {len(self.failures)} of {len(todo)} {noun} failed, {written} written to "
            f"{self.out_dir}{skip_note * bool(skipped)}: {'; '.join(self.failures)}\n"
        )
        return EXIT_UNREADABLE

    def _written_text(self) -> str:
        """What was written: 3 images, 1 video, or 3 images and 1 video."""
        parts = [count(self.written[kind], kind) for kind in ("image", "video")]
        if not self.written["video"]:
            return parts[0]
        return parts[1] if not self.written["image"] else " and ".join(parts)

    def _write_error_line(self, err: OutputWriteError) -> str:
        code = err.error.errno
        reason = err.error.strerror or str(err.error) or type(err.error).__name__
        if code is not None and code in errno.errorcode:
            reason += f", {errno.errorcode[code]}"
        where = _mount_point(err.path)
        if code == errno.ENOSPC:
            reason = f"disk full: {reason}"
        return (
            f"cannot write {err.path} ({reason}) on the disk mounted at {where}; "
            f"{self._written_text()} written to {self.out_dir} before it, each complete; free "
            "space or pick another -o, then rerun with --skip-existing"
        )


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turns an OSError raised while writing outputs into :class:`OutputWriteError` naming
    ``path`` (the outputs being written), or the error's own file unless it is a temporary one.
    A broken pipe (stdout or stderr closed by the reader) is not a write error: it passes."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        own = Path(error.filename) if isinstance(error.filename, str) else None
        where = own if own is not None and not own.name.startswith(".") else path
        raise OutputWriteError(where, error) from None


def _complete(out_dir: Path, job: Job) -> bool:
    from vocaseg.inference.image_outputs import output_paths, outputs_complete
    from vocaseg.inference.video_outputs import output_paths as video_paths

    if job.video:
        return outputs_complete(video_paths(out_dir / job.name.parent, job.name.name))
    return outputs_complete(output_paths(out_dir, job.name))


def _mount_point(path: Path) -> str:
    """The mount point of the file system that holds ``path`` (its nearest existing folder)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return str(folder)
