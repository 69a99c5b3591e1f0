"""The contract every vocaseg method honours, so that the segmenter, evaluator, trainer, exporter and
benchmarks never special-case a method (docs/contract.md explains it for someone adding a method).

Inference path (``vocaseg.inference.predict``)::

    vocabulary = model.background.prepare(user_or_dataset_vocabulary)   # adds "background" if needed
    text = model.text_for(vocabulary)            # [Q, D]: encode_vocabulary(scored vocabulary), cached
    for each window of the resized, normalised, padded image:
        logits = model(window, text)                                        # [B, Q, h, w]
        out = model.window_output(upsampled logits, scored, model.background)   # [B, Q', Hw, Ww]
    stitched = average of overlapping window outputs, resized to the original image
    scores = model.finalize(stitched, vocabulary, model.background)    # [B, K, H, W]; argmax = label

Many classes (``chunkable`` methods): the same a run of classes at a time, from ``dense_chunks``
rows through ``class_scores``, the labels reduced over the runs by ``BackgroundProtocol.labels``.

Training path (``vocaseg.engine.trainer``; the data come from the pipeline the method's registry
entry names, see ``vocaseg.data.pipelines``)::

    model.prepare_training(spec)        # once: TrainSpec(vocabulary, ignore_index, zero_shot, init)
    per optimiser step:
        model.before_train_step(step, total)
        batch["num_targets"] = global count of model.count_targets(batch), if not None
        outputs = model.forward_train(batch)     # under autocast (bf16/fp16 on a GPU)
        losses = model.loss(batch, outputs)      # fp32, outside autocast: {"loss": total, ...}

Parts of a model are declared, not improvised: ``frozen_modules`` (e.g. the CLIP towers) are kept
in eval mode by :meth:`SegmentationModel.train`, never receive gradients and are not saved — model
folders and checkpoints hold a reference to the CLIP weights they are rebuilt from;
``training_only_modules`` (teachers) exist only in models built for training and are never saved.

Every method config inherits :class:`InferenceConfig`, so the inference settings have one set of
names (``short_side``, ``window``, ``prob_thd``, ...) in every method, every ``--set`` and every
benchmark protocol row. ``Q`` counts text queries (a class with synonyms may have several), ``K``
classes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from vocaseg.background import BackgroundProtocol, make_protocol
from vocaseg.config import to_dict
from vocaseg.constants import CLIP_MEAN, CLIP_STD
from vocaseg.data.batch import Batch, TrainSpec
from vocaseg.data.classlists import read_names
from vocaseg.errors import ConfigError
from vocaseg.hashing import tensors_sha256
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@dataclass
class InferenceConfig:
    """Inference settings every method config inherits; methods override the defaults."""

    short_side: Annotated[int | None, "resize so the short side has this many pixels (0: keep)"] = (
        None
    )
    max_long_side: Annotated[int | None, "cap the long side at this many pixels (0: no cap)"] = None
    window: Annotated[int | None, "sliding-window size in pixels (0: whole image at once)"] = None
    stride: Annotated[int | None, "sliding-window stride in pixels (0: the window size)"] = None
    pad: Annotated[
        Literal["center", "bottom_right"],
        "pad model inputs symmetrically (center) or right/bottom (bottom_right, as detectron2)",
    ] = "center"
    size_divisor: Annotated[
        int, "pad model inputs to a multiple of this (0: the method's own, 1: no padding)"
    ] = 0
    background: Annotated[
        str, "background protocol: bg:none, bg:threshold, bg:groupvit, bg:prompt, bg:catseg-20b"
    ] = "bg:none"
    prob_thd: Annotated[
        float,
        "pixels whose best score is below this become 'background' (a class added to the "
        "vocabulary when it has none); 0: off",
    ] = 0.0
    area_thd: Annotated[
        float, "drop classes covering at most this share of the foreground (SCLIP); 0: off"
    ] = 0.0
    background_names: Annotated[
        str | None,
        "background synonyms (bg:threshold, bg:prompt) or distractors (bg:catseg-20b): a "
        "class-list id or a text file, one name per line",
    ] = None
    pamr_steps: Annotated[
        int, "PAMR refinement steps on the stitched scores (NACLIP: 10, dilations 8 and 16); 0: off"
    ] = 0

    def __post_init__(self) -> None:
        for key in ("short_side", "max_long_side", "window", "stride"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"{key} must be a positive number of pixels or 0, got {value}")
            if value == 0:
                setattr(self, key, None)
        if self.size_divisor < 0:
            raise ConfigError(f"size_divisor must be >= 0, got {self.size_divisor}")
        if self.pamr_steps < 0:
            raise ConfigError(f"pamr_steps must be >= 0, got {self.pamr_steps}")
        for key in ("prob_thd", "area_thd"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key} must lie in [0, 1], got {getattr(self, key)}")


INFERENCE_KEYS = frozenset(f.name for f in fields(InferenceConfig))


@dataclass(frozen=True)
class Preprocess:
    """How images are prepared for a model: read by the segmenter, evaluator and exporter.

    The image is resized (aspect kept) so that its short side is ``short_side`` unless the long side
    would exceed ``max_long_side``; then normalised with ``mean``/``std`` (0-255 scale); then either
    run whole (``window is None``) or in ``window``×``window`` crops every ``stride`` pixels. Each
    model input is padded with zeros to a multiple of ``size_divisor`` (``pad``: ``center`` or
    ``bottom_right``); the padding is cut from the logits again. ``pamr_steps`` > 0 refines the
    stitched scores at image size with PAMR before ``finalize``.
    """

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    short_side: int | None = 448
    max_long_side: int | None = 2048
    window: int | None = None
    stride: int | None = None
    size_divisor: int = 1
    pad: str = "center"
    pamr_steps: int = 0


class SegmentationModel(nn.Module):
    """Base class of every method. Subclasses call :meth:`setup_inference` in ``__init__``,
    declare ``frozen_modules`` / ``training_only_modules`` and implement the methods below."""

    #: Registry name (``"maskclip"``, ``"tagclip"``, ...), set by ``create_model``.
    name: str = ""
    #: Submodules rebuilt from the CLIP reference: eval mode, no gradient, not saved.
    frozen_modules: ClassVar[tuple[str, ...]] = ()
    #: Submodules that exist only in a model built for training (teachers): never saved.
    training_only_modules: ClassVar[tuple[str, ...]] = ()
    #: Config keys besides :class:`InferenceConfig`'s that ``update_settings`` may change.
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    #: Inference may score a run of classes at a time (many classes): ``dense_chunks``,
    #: ``window_output`` and ``class_scores`` work on any run of whole scored classes.
    chunkable: ClassVar[bool] = False

    config: Any
    preprocess: Preprocess = Preprocess()
    background: BackgroundProtocol = BackgroundProtocol()
    #: Where the frozen CLIP came from (``vocaseg.models.towers.ClipSource.record()``), or None.
    clip_source: dict[str, Any] | None = None
    #: How a loaded model was trained (zero-shot split, dataset record), from its model folder.
    training_record: dict[str, Any] | None = None

    # ----- inference settings -------------------------------------------------------------------

    def setup_inference(
        self,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        size_divisor: int = 1,
    ) -> None:
        """Derive ``preprocess`` and ``background`` from ``self.config`` (an InferenceConfig).

        ``size_divisor`` is the method's own (e.g. the ViT patch size), used when the config says 0.
        """
        self._pixel_stats = (tuple(mean), tuple(std), int(size_divisor))
        cfg = self.config
        self.preprocess = Preprocess(
            mean=tuple(mean),
            std=tuple(std),
            short_side=cfg.short_side,
            max_long_side=cfg.max_long_side,
            window=cfg.window,
            stride=(cfg.stride or cfg.window) if cfg.window else None,
            size_divisor=cfg.size_divisor or size_divisor,
            pad=cfg.pad,
            pamr_steps=cfg.pamr_steps,
        )
        self.background = make_protocol(
            cfg.background, cfg.prob_thd, cfg.area_thd, read_names(cfg.background_names)
        )

    def update_settings(self, **settings: Any) -> None:
        """Change inference settings without rebuilding the model (``--set`` on a loaded model)."""
        from vocaseg.config import from_dict

        allowed = INFERENCE_KEYS | set(self.runtime_keys)
        fixed = sorted(set(settings) - allowed)
        if fixed:
            raise ConfigError(
                f"{', '.join(fixed)} cannot change on a built {self.name or 'model'}; settings "
                f"that can: {', '.join(sorted(allowed))}"
            )
        self.config = from_dict(
            type(self.config), {**to_dict(self.config), **settings}, f"{self.name} settings"
        )
        self.setup_inference(*self._pixel_stats)
        self.settings_changed(set(settings))

    def settings_changed(self, keys: set[str]) -> None:
        """Hook after :meth:`update_settings` (e.g. drop a text cache when templates change)."""

    def text_for(self, vocabulary: Vocabulary) -> Tensor:
        """Text rows the model scores for ``vocabulary`` under its background protocol: [Q, D]."""
        return self.encode_vocabulary(self.background.scored_vocabulary(vocabulary))

    # ----- inference ----------------------------------------------------------------------------

    def encode_vocabulary(self, vocabulary: Vocabulary) -> Tensor:
        """Text embeddings for ``vocabulary``: [Q, D], one row per query the model scores."""
        raise NotImplementedError

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        """Dense logits [B, Q, h, w] for normalised ``images`` [B, 3, H, W] and ``text`` [Q, D]."""
        raise NotImplementedError

    def window_output(
        self, logits: Tensor, scored: Vocabulary, background: BackgroundProtocol
    ) -> Tensor:
        """Map one window's logits, upsampled to its size, to what overlapping windows average.
        ``scored`` is the vocabulary the logits are over (with ``chunkable``, possibly a run of
        its classes, the logits being that run's ``dense_chunks`` rows). Default: the logits."""
        return logits

    def finalize(
        self, stitched: Tensor, vocabulary: Vocabulary, background: BackgroundProtocol
    ) -> Tensor:
        """Stitched window outputs [B, Q', H, W] -> class scores [B, K, H, W] over ``vocabulary``
        (argmax = label): :meth:`class_scores`, then the background protocol."""
        scores = self.class_scores(stitched, background.scored_vocabulary(vocabulary), background)
        return background.apply(scores, vocabulary, self.background_scores(stitched, background))

    def class_scores(
        self,
        stitched: Tensor,
        scored: Vocabulary,
        background: BackgroundProtocol,
        state: Tensor | None = None,
    ) -> Tensor:
        """Stitched outputs over ``scored`` (the scored vocabulary, or a run of its classes) ->
        scores [B, K', H, W] of its classes before the background protocol. ``state``: the
        :meth:`chunk_normaliser` fold over every chunk, None when ``stitched`` holds every class.
        Default: the stitched outputs themselves."""
        return stitched

    def class_order(
        self, stitched: Tensor, scored: Vocabulary, background: BackgroundProtocol
    ) -> Tensor:
        """Scores [B, K', H, W] with the per-pixel order that :meth:`class_scores` would give
        over every class, from the stitched outputs of one run of classes alone: for labels under
        a protocol whose labels are an argmax (``BackgroundProtocol.argmax_only``), no
        :meth:`chunk_normaliser` pass needed. Default: :meth:`class_scores` (right for every
        method without a normaliser)."""
        return self.class_scores(stitched, scored, background)

    def background_scores(self, stitched: Tensor, background: BackgroundProtocol) -> Tensor | None:
        """The background class's scores [B, 1, H, W] when the method computes them itself from
        the stitched outputs (of any chunk); None (default): the protocol's own rule."""
        return None

    # ----- many classes: scoring a chunk of classes at a time (docs/contract.md §3) -------------

    def dense_chunks(
        self, images: Tensor, text: Tensor, scored: Vocabulary
    ) -> Callable[[range], Tensor]:
        """``forward`` a run of classes at a time: the work every class shares is done once, then
        ``rows(classes)`` gives [B, R, h, w]: the forward rows of the scored classes ``classes``,
        then any row every class reads (e.g. TagCLIP's trusty map). Default: ``forward`` once, one
        row per class."""
        logits = self(images, text)
        return lambda classes: logits[:, classes.start : classes.stop]

    def chunk_normaliser(self, stitched: Tensor, state: Tensor | None) -> Tensor | None:
        """Fold the stitched outputs of one chunk [B, Q', H, W] into a per-pixel state over all
        chunks that :meth:`class_scores` needs (MaskCLIP: the softmax normaliser over every
        query); ``state`` is None for the first chunk. Default None: a chunk's class scores
        depend on its own rows only."""
        return None

    # ----- training -----------------------------------------------------------------------------

    def forward_train(self, batch: Batch) -> Any:
        """Training forward pass on a collated batch; the result goes to :meth:`loss`."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no training forward")

    def loss(self, batch: Batch, outputs: Any) -> dict[str, Tensor]:
        """Loss terms in fp32; key ``"loss"`` holds the weighted total the trainer back-propagates."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no loss")

    def train_needs(self) -> frozenset[str]:
        """Optional batch entries the training pipeline must add (e.g. ``{"label_full"}``)."""
        return frozenset()

    def prepare_training(self, spec: TrainSpec) -> None:
        """Called once before training with what the model learns from (:class:`TrainSpec`)."""

    def count_targets(self, batch: Batch) -> float | None:
        """How many targets this micro-batch holds for loss normalisation (TagCLIP N_m, GKC masks).

        If not ``None``, the trainer sums it over the accumulated micro-batches and all processes
        and sets ``batch["num_targets"]`` = max(global count, 1) / (micro-batches × processes):
        a loss that sums over targets and divides by it matches one process holding the global
        batch (the trainer averages micro-batch losses; DDP averages processes).
        """
        return None

    def before_train_step(self, step: int, total: int) -> None:
        """Called before optimiser step ``step`` (0-based) of ``total``."""

    def result_notes(self) -> list[str]:
        """Protocol caveats recorded with every evaluation result of this model (default none)."""
        return []

    def config_dict(self) -> dict[str, Any]:
        """The configuration that rebuilds this model with ``create_model(name, config=...)``."""
        return to_dict(self.config)

    # ----- frozen and training-only parts -------------------------------------------------------

    def _declared(self, names: tuple[str, ...]) -> Iterator[tuple[str, nn.Module]]:
        for name in names:
            module = self.get_submodule(name) if _has_submodule(self, name) else None
            if module is not None:
                yield name, module

    def freeze_declared(self) -> None:
        """No gradient for the frozen and training-only modules (``create_model`` calls this)."""
        for _, module in self._declared(self.frozen_modules + self.training_only_modules):
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> SegmentationModel:
        """Train mode for the model, eval mode always for frozen and training-only modules."""
        super().train(mode)
        for _, module in self._declared(self.frozen_modules + self.training_only_modules):
            module.eval()
        return self

    def _prefixes(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{name}." for name, _ in self._declared(names))

    def saved_state_dict(self, include_frozen: bool = False) -> dict[str, Tensor]:
        """What model folders and checkpoints hold: parameters and buffers without the
        training-only modules and, unless ``include_frozen``, without the frozen ones."""
        dropped = self._prefixes(self.training_only_modules)
        if not include_frozen:
            dropped += self._prefixes(self.frozen_modules)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(dropped)}

    def frozen_state_sha256(self) -> dict[str, str]:
        """Hash of the frozen tensors per part (a frozen module, and its ``.visual`` tower apart),
        so a reference rebuilt with more towers (a setting that needs the image tower at
        inference) still checks the parts the model was saved with. Empty without frozen parts."""
        groups: dict[str, dict[str, Tensor]] = {}
        for name, _ in self._declared(self.frozen_modules):
            for key, value in self.state_dict().items():
                if key.startswith(f"{name}."):
                    part = f"{name}.visual" if key.startswith(f"{name}.visual.") else name
                    groups.setdefault(part, {})[key] = value
        return {part: tensors_sha256(tensors) for part, tensors in sorted(groups.items())}

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        return model.get_submodule(name) is not None
    except AttributeError:
        return False


__all__ = [
    "INFERENCE_KEYS",
    "Batch",
    "InferenceConfig",
    "Preprocess",
    "SegmentationModel",
    "TrainSpec",
]
