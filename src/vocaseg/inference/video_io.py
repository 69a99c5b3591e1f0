"""Video input: files through PyAV (the optional ``[video]`` extra, which ships its own FFmpeg),
animated GIFs and folders of numbered frames through PIL, and in-memory frames (no PyAV needed).

Every source is read as a stream of ``(time in seconds, RGB uint8 [H, W, 3])`` pairs, so memory does
not grow with the video's length. Streams other than the first video stream (audio, subtitles) are
dropped and listed in :attr:`VideoInfo.dropped`. A frame that cannot be decoded is skipped and
described in :attr:`FrameSource.corrupt` and a :class:`vocaseg.errors.VocasegWarning`; the rest of
the video is kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from vocaseg.errors import ImageError, VideoError, VocasegWarning
from vocaseg.inference.images import IMAGE_SUFFIXES, ImageInput, as_rgb_array, read_image

#: File suffixes treated as videos by :func:`is_video_path` (any file FFmpeg reads works).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".gif")
#: Frame rate of sources that carry none (frame folders, arrays) unless ``fps`` is given.
DEFAULT_FPS = 25
_FORMATS_HINT = "pass an mp4, mov, webm, mkv, avi or animated GIF file, or a folder of frames"
_TIME_EPS = 1e-6  # seconds; frame times are compared with this slack

VideoInput = str | os.PathLike | np.ndarray | Iterable[ImageInput]


def import_av() -> ModuleType:
    """The ``av`` module, or a :class:`VideoError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError(
            "video files need PyAV, which is not installed; run: pip install 'vocaseg[video]'"
        ) from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What a source says about itself.

    ``rate`` is the exact frame rate (e.g. 30000/1001); ``frame_count`` and ``duration`` cover the
    whole source (None where the container does not say); ``codec`` is the decoder name (None for
    arrays); ``dropped`` lists the streams not read, e.g. ``("audio (aac)",)``; ``fps_assumed`` is
    True when the source has no frame rate and ``rate`` is the caller's or the default.
    """

    source: str
    width: int
    height: int
    rate: Fraction
    frame_count: int | None
    duration: float | None
    codec: str | None
    dropped: tuple[str, ...] = ()
    fps_assumed: bool = False

    @property
    def fps(self) -> float:
        return float(self.rate)

    def frames_between(self, start: float, end: float | None) -> int | None:
        """Frames expected with times in [start, end): an estimate; None for an unknown length."""
        length = self.duration
        if length is None and self.frame_count is not None:
            length = self.frame_count / self.rate
        if length is None:
            return None
        stop = length if end is None else min(end, length)
        count = max(0, math.ceil((stop - start) * self.rate - _TIME_EPS))
        return count if self.frame_count is None else min(count, self.frame_count)


class FrameSource:
    """A stream of frames; subclasses implement :meth:`_frames`. Use as a context manager."""

    info: VideoInfo

    def __init__(self) -> None:
        self.corrupt: list[str] = []

    def read(
        self, start: float = 0.0, end: float | None = None
    ) -> Iterator[tuple[float, np.ndarray]]:
        """Frames whose time t (seconds from the start) satisfies start <= t < end, in order."""
        for time, frame in self._frames(start):
            if end is not None and time >= end - _TIME_EPS:
                return
            if time >= start - _TIME_EPS:
                yield time, frame

    def _frames(self, start: float) -> Iterator[tuple[float, np.ndarray]]:
        """All frames from at most ``start`` on (a subclass may skip ahead, never past it)."""
        raise NotImplementedError

    def _skipped(self, what: str) -> None:
        """Record (and warn about) frames that could not be read."""
        self.corrupt.append(what)
        warnings.warn(f"{self.info.source}: {what}", VocasegWarning, stacklevel=2)

    def close(self) -> None:
        """Release the file handles."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_video(source: VideoInput, fps: float | None = None) -> FrameSource:
    """A :class:`FrameSource` for a video file, an animated GIF, a folder of numbered frames, a
    [T, H, W, 3] array or an iterable of frames (arrays, PIL images, tensors, image paths).

    ``fps`` is the frame rate of sources that carry none (folders, arrays; default 25); files
    keep their own rate. Errors are :class:`VideoError` s naming the source and the fix.
    """
    if fps is not None and not fps > 0:
        raise VideoError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001) if fps is not None else None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderSource(path, rate)
        if not path.is_file():
            raise VideoError(f"video not found: {path} (check the path)")
        if _is_gif(path):
            return GifSource(path)
        return AVSource(path)
    if isinstance(source, np.ndarray) and source.ndim not in (4, 3):
        raise VideoError(f"a video array must be [T, H, W, 3], got shape {source.shape}")
    if isinstance(source, Iterable):
        return ArraySource(source, rate)
    raise VideoError(f"cannot read a video from {type(source).__name__}; {_FORMATS_HINT}")


def is_video_path(path: str | os.PathLike) -> bool:
    """True for a file with a video suffix (a GIF only if it has more than one frame)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
        return False
    if path.suffix.lower() != ".gif":
        return True
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except OSError:
        return False


class AVSource(FrameSource):
    """The first video stream of a file, decoded by PyAV packet by packet."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._av = av = import_av()
        try:
            self._container = av.open(str(path))
        except av.error.FFmpegError as err:
            raise VideoError(
                f"{path} is not a video file FFmpeg can read ({_reason(err)}); {_FORMATS_HINT}"
            ) from None
        streams = self._container.streams
        if not streams.video:
            held = ", ".join(_describe(s) for s in streams) or "no streams at all"
            self._container.close()
            raise VideoError(f"{path} has no video stream ({held}); pass a file that holds video")
        self._stream = stream = streams.video[0]
        if stream.codec_context is None:
            self._container.close()
            raise VideoError(
                f"{path}: its video codec is not supported by PyAV's FFmpeg; re-encode it to "
                "H.264, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"
            )
        stream.thread_type = "AUTO"  # frame + slice threads in the decoder
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self._offset = stream.start_time or 0  # pts of the first frame, in stream.time_base
        duration = None
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000  # AV_TIME_BASE microseconds
        self.info = VideoInfo(
            source=str(path),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            rate=Fraction(rate) if rate else Fraction(DEFAULT_FPS),
            frame_count=stream.frames or None,
            duration=duration,
            codec=stream.codec_context.name,
            dropped=tuple(_describe(s) for s in streams if s.index != stream.index),
            fps_assumed=not rate,
        )

    def _frames(self, start: float) -> Iterator[tuple[float, np.ndarray]]:
        stream, error = self._stream, self._av.error.FFmpegError
        if start > 0:
            # to the key frame at or before ``start`` (read() drops the frames before it); a file
            # that cannot seek is decoded from the beginning
            with contextlib.suppress(error):
                self._container.seek(self._offset + int(start / stream.time_base), stream=stream)
        packets = self._container.demux(stream)
        time = None
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except error as err:  # the file itself is damaged: keep what was read
                where = "at the start" if time is None else f"after {time:.3f} s"
                self._skipped(f"reading stopped {where} ({_reason(err)})")
                return
            try:
                frames = packet.decode()  # the last (empty) packet flushes the decoder
            except error as err:  # with frame threads it surfaces a few packets late
                where = "at the start" if time is None else f"after {time:.3f} s"
                self._skipped(f"a frame {where} could not be decoded ({_reason(err)})")
                continue
            for frame in frames:
                time = self._seconds(frame.pts, time)
                # the first frame's size for all: a stream may change resolution midway
                rgb = frame.to_ndarray(
                    format="rgb24", width=self.info.width, height=self.info.height
                )
                yield time, rgb

    def _seconds(self, pts: int | None, previous: float | None) -> float:
        if pts is None:  # no timestamp: one frame after the previous one
            return 0.0 if previous is None else previous + 1 / self.info.fps
        return float((pts - self._offset) * self._stream.time_base)

    def close(self) -> None:
        self._container.close()


class GifSource(FrameSource):
    """An animated GIF through PIL (disposal and transparency composited), at its own timing.

    ``rate`` is 1000 / the first frame's delay in ms (GIF delays of 0 play at 10 fps in browsers);
    frame times follow each frame's own delay.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            self._image = Image.open(path)
            self._image.load()
        except OSError as err:
            raise VideoError(f"{path} is damaged or not a GIF ({err}); {_FORMATS_HINT}") from None
        frames = getattr(self._image, "n_frames", 1)
        delay = _gif_delay_ms(self._image)
        self.info = VideoInfo(
            source=str(path),
            width=self._image.width,
            height=self._image.height,
            rate=Fraction(1000, delay),
            frame_count=frames,
            duration=None,
            codec="gif",
        )

    def _frames(self, start: float) -> Iterator[tuple[float, np.ndarray]]:
        time_ms = 0
        for index in range(self.info.frame_count or 1):
            try:
                self._image.seek(index)
                rgb = np.asarray(self._image.convert("RGB"))
            except (OSError, EOFError, ValueError) as err:
                self._skipped(f"frame {index} skipped ({err})")
                continue
            yield time_ms / 1000, rgb
            time_ms += _gif_delay_ms(self._image)

    def close(self) -> None:
        self._image.close()


class FolderSource(FrameSource):
    """Image files of one size in natural order (frame2.png before frame10.png)."""

    def __init__(self, folder: Path, rate: Fraction | None) -> None:
        super().__init__()
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise VideoError(f"folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        self._files = sorted(files, key=_natural_key)
        first = read_image(self._files[0])
        self.info = VideoInfo(
            source=str(folder),
            width=first.width,
            height=first.height,
            rate=rate or Fraction(DEFAULT_FPS),
            frame_count=len(self._files),
            duration=None,
            codec="image files",
            fps_assumed=rate is None,
        )

    def _frames(self, start: float) -> Iterator[tuple[float, np.ndarray]]:
        first = max(0, math.floor(start * self.info.rate))
        for index in range(first, len(self._files)):
            path = self._files[index]
            try:
                rgb = np.asarray(read_image(path))
            except ImageError as err:
                self._skipped(f"frame {index} skipped ({err})")
                continue
            _check_size(rgb, self.info, path.name)
            yield float(index / self.info.rate), rgb


class ArraySource(FrameSource):
    """A [T, H, W, 3] array or any iterable of images, at ``rate`` frames per second."""

    def __init__(self, frames: Iterable[ImageInput], rate: Fraction | None) -> None:
        super().__init__()
        count = len(frames) if hasattr(frames, "__len__") else None
        iterator = iter(frames)
        try:
            first = as_rgb_array(next(iterator))
        except StopIteration:
            raise VideoError("the video holds no frames; pass at least one frame") from None
        except ImageError as err:
            raise VideoError(f"frame 0: {err}") from None
        self._frames_left = chain([first], iterator)
        self.info = VideoInfo(
            source="frames",
            width=first.shape[1],
            height=first.shape[0],
            rate=rate or Fraction(DEFAULT_FPS),
            frame_count=count,
            duration=None,
            codec=None,
            fps_assumed=rate is None,
        )

    def _frames(self, start: float) -> Iterator[tuple[float, np.ndarray]]:
        for index, item in enumerate(self._frames_left):
            time = float(index / self.info.rate)
            if time < start - _TIME_EPS:
                continue  # not decoded
            try:
                rgb = as_rgb_array(item)
            except ImageError as err:
                raise VideoError(f"frame {index}: {err}") from None
            _check_size(rgb, self.info, f"frame {index}")
            yield time, rgb


def _check_size(rgb: np.ndarray, info: VideoInfo, name: str) -> None:
    if rgb.shape[:2] != (info.height, info.width):
        raise VideoError(
            f"{name} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
            f"{info.width}x{info.height}; all frames of a video must have one size"
        )


def _natural_key(path: Path) -> list[Any]:
    """'frame10.png' -> ['frame', 10, '.png'], so numbers sort by value."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _is_gif(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(6) in (b"GIF87a", b"GIF89a")


def _gif_delay_ms(image: Image.Image) -> int:
    """The current frame's delay; 0 or missing plays at 100 ms in browsers."""
    return int(image.info.get("duration") or 100)


def _describe(stream: Any) -> str:
    codec = stream.codec_context.name if stream.codec_context is not None else "unknown codec"
    return f"{stream.type} ({codec})"


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)
