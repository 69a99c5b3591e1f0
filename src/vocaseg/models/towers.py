"""The CLIP a method stands on: which weights (``ClipSource``) and which towers it keeps (``Towers``).

A registry entry declares the towers its method needs and when (``{"text": "inference",
"visual": "training"}`` for a method that keeps the text tower to classify and uses the image tower
only to initialise or teach while training). :func:`build_towers` loads or builds the CLIP once,
drops the towers a model built for inference does not need, freezes it and records where it came
from, so model folders can refer to the weights instead of holding a second copy.

Weights are explicit: ``pretrained=False`` (or ``"random"``) builds random weights in the config's
architecture and is recorded as ``"random"``; ``True`` loads the config's named weights (downloaded
on first use); a string is a known name or a checkpoint file (``vocaseg.clip.load``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vocaseg.errors import ConfigError
from vocaseg.hashing import file_sha256

TowerUse = Literal["inference", "training"]
TEXT_MODULES = (
    "transformer",
    "token_embedding",
    "positional_embedding",
    "ln_final",
    "text_projection",
)
RANDOM = "random"


@dataclass(frozen=True)
class ClipSource:
    """Where CLIP weights came from: a known name, a file (with its SHA-256) or ``"random"``.

    ``architecture`` is the ``CLIPConfig`` as a dict, so the weights can be rebuilt (random or
    self-contained model folders) or checked.
    """

    weights: str
    architecture: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    @property
    def is_reference(self) -> bool:
        """True when the weights can be fetched again from ``weights`` (not random or in memory)."""
        return self.weights not in (RANDOM, "in-memory")

    def record(self) -> dict[str, Any]:
        return {"weights": self.weights, "sha256": self.sha256, "architecture": self.architecture}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClipSource:
        return cls(record["weights"], dict(record.get("architecture") or {}), record.get("sha256"))


@dataclass
class Towers:
    """What a builder receives.

    ``clip``: the frozen CLIP with the towers the method uses at inference (``clip.visual`` is
    ``None`` when the image tower is used only in training). ``teacher``: the frozen CLIP image
    tower when it is declared ``"training"`` and the model is built for training, else ``None``
    (kept apart from ``clip`` so the frozen inference towers are the same in both builds).
    ``source``: where the weights came from; ``training``: whether this is a training build.
    """

    clip: Any
    source: ClipSource
    training: bool = False
    teacher: Any = None

    @property
    def config(self) -> Any:
        """The CLIP architecture (``CLIPConfig``), e.g. to build a student of the same shape."""
        return self.clip.config


def resolve_weights(pretrained: bool | str | os.PathLike, architecture: Any) -> str:
    """The weights spec for ``pretrained`` given the config's ``clip`` architecture field."""
    if pretrained is False or pretrained == RANDOM:
        return RANDOM
    if pretrained is True:
        if not isinstance(architecture, str):
            raise ConfigError(
                "this model's CLIP is a custom architecture with no known weights; pass weights "
                "as a file (e.g. --weights clip.pt) or 'random'"
            )
        return architecture
    return str(pretrained)


def load_clip(weights: str, architecture: Any) -> tuple[Any, ClipSource]:
    """The CLIP of ``weights`` (``"random"``: random in ``architecture``) and its source record."""
    from vocaseg import clip as clip_lib

    if weights == RANDOM:
        if architecture is None:
            raise ConfigError("this method needs a CLIP, but its config names none (clip: null)")
        config = architecture
        if isinstance(architecture, dict):
            config = clip_lib.CLIPConfig.from_dict(architecture)
        model = clip_lib.build(config)
        return model, ClipSource(RANDOM, model.config.to_dict())
    path = Path(weights).expanduser()
    model = clip_lib.load(weights)
    if path.exists():
        resolved = str(path.resolve())
        sha = file_sha256(path) if path.is_file() else None
        return model, ClipSource(resolved, model.config.to_dict(), sha)
    return model, ClipSource(weights, model.config.to_dict())


def strip_towers(clip: Any, keep: set[str]) -> Any:
    """Drop the CLIP towers not in ``keep`` (``"text"``, ``"visual"``) to save memory."""
    if "visual" not in keep:
        clip.visual = None
    if "text" not in keep:
        for name in TEXT_MODULES:
            delattr(clip, name)
    return clip


def build_towers(
    uses: dict[str, TowerUse],
    architecture: Any,
    *,
    pretrained: bool | str | os.PathLike = False,
    clip: Any = None,
    source: ClipSource | None = None,
    training: bool = False,
) -> Towers | None:
    """The towers ``uses`` declares, kept as the build needs them; None when ``uses`` is empty.

    ``clip`` (with its ``source``) is used as given instead of loading ``pretrained``. An image
    tower used only in training becomes ``Towers.teacher`` in a training build.
    """
    if not uses:
        return None
    if clip is None:
        clip, source = load_clip(resolve_weights(pretrained, architecture), architecture)
    elif source is None:
        source = ClipSource("in-memory", clip.config.to_dict())
    teacher = None
    if training and uses.get("visual") == "training":
        teacher = clip.visual.eval().requires_grad_(False)
    strip_towers(clip, {tower for tower, use in uses.items() if use == "inference"})
    clip.eval().requires_grad_(False)
    return Towers(clip, source, training, teacher)
