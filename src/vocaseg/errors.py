"""Error types for mistakes a user can fix.

Every exception here carries a message that names the problem and the fix. The command line turns
them into a single ``error: ...`` line with exit code 2; library users can catch them by type.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (path, file, option, vocabulary); the message says how to fix it."""


class CheckpointError(UserError, ValueError):
    """A weights file is missing, unreadable, truncated, or belongs to another architecture."""


class DatasetError(UserError, ValueError):
    """A dataset root, split file, image or label is missing or malformed."""


class ConfigError(UserError, ValueError):
    """A configuration file or override names an unknown key or holds a value of the wrong type."""


class VocabularyError(UserError, ValueError):
    """A class vocabulary is empty, has duplicates, or has names the text encoder cannot take."""


class ImageError(UserError, ValueError):
    """An image file is missing, not an image, or truncated."""


class WeightsNotFoundError(UserError, FileNotFoundError):
    """Pretrained weights are needed but neither cached nor downloadable (e.g. offline)."""


class VocasegWarning(UserWarning):
    """Something a user should know that does not stop the work (printed as one ``warning:`` line)."""


class VideoError(UserError, ValueError):
    """A video is missing, not a video, has no video stream, uses an unsupported codec, or needs
    the ``[video]`` extra (PyAV)."""
