"""The contract every vocaseg method honours, so that the segmenter, evaluator, trainer, exporter
and benchmarks never special-case a method.

Inference path (``vocaseg.inference.predict``)::

    text = model.encode_vocabulary(vocabulary)                 # [Q, D], cached by the caller
    for each window of the resized, normalised image:
        logits = model(window, text)                           # [B, Q, h, w]
        out = model.window_output(upsampled logits, vocabulary)  # [B, Q', H_w, W_w]
    stitched = average of overlapping window outputs, resized to the original image
    scores = model.finalize(stitched, vocabulary)              # [B, K, H, W]; argmax = label

Training path (``vocaseg.engine.trainer``; the data comes from a ``vocaseg.data.pipelines``
pipeline, whose ``collate_fn`` builds ``batch``)::

    model.prepare_training(vocabulary, setting)                # once: training classes, setting
    per optimiser step:
        model.before_train_step(step, total)                   # e.g. annealed temperatures
        batch["num_targets"] = global count of model.count_targets(batch), if not None
        outputs = model.forward_train(batch)                   # method-specific
        losses = model.loss(batch, outputs)                    # {"loss": total, "<term>": ...}

``model.train_needs()`` names optional batch entries a pipeline adds only on request
(``"label_full"``: unmasked labels in the inductive zero-shot setting). Parameter groups come from
the training config (name-substring lr/decay multipliers); a model may add
``no_weight_decay() -> set[str]`` of parameter names. Frozen parts set ``requires_grad=False``.

``Q`` counts text queries (a class with synonyms may have several), ``K`` counts classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from vocaseg.text.vocab import Vocabulary

# Image statistics on the 0-255 scale.
CLIP_MEAN = (122.770938, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.32316305)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preprocess:
    """How images are prepared for a model: read by the segmenter, evaluator and exporter.

    The image is resized (aspect kept) so that its short side is ``short_side`` unless the long side
    would exceed ``max_long_side``; then normalised with ``mean``/``std`` (0-255 scale); then either
    run whole (``window is None``) or in ``window``×``window`` crops every ``stride`` pixels.
    ``size_divisor`` > 1 pads each model input to a multiple (e.g. the ViT patch size).
    """

    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    short_side: int | None = 448
    max_long_side: int | None = 2048
    window: int | None = None
    stride: int | None = None
    size_divisor: int = 1


class SegmentationModel(nn.Module):
    """Base class of every method. Subclasses set ``preprocess`` and implement the methods below."""

    #: Registry name of the method (``"maskclip"``, ``"tagclip"``, ...).
    name: str = ""
    preprocess: Preprocess = Preprocess()

    def encode_vocabulary(self, vocabulary: Vocabulary) -> Tensor:
        """Text embeddings for ``vocabulary``: [Q, D], one row per query the model scores."""
        raise NotImplementedError

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        """Dense logits [B, Q, h, w] for normalised ``images`` [B, 3, H, W] and ``text`` [Q, D]."""
        raise NotImplementedError

    def window_output(self, logits: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Map logits upsampled to a window's size to what overlapping windows average.

        Default: the logits themselves.
        """
        return logits

    def finalize(self, stitched: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Map stitched window outputs [B, Q', H, W] to class scores [B, K, H, W] (argmax = label).

        Default: identity (requires Q' == K).
        """
        return stitched

    def forward_train(self, batch: dict[str, Any]) -> Any:
        """Training forward pass on a collated batch; the result goes to :meth:`loss`."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no training forward")

    def loss(self, batch: dict[str, Any], outputs: Any) -> dict[str, Tensor]:
        """Loss terms; key ``"loss"`` holds the weighted total that the trainer back-propagates."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no loss")

    def train_needs(self) -> frozenset[str]:
        """Optional batch entries the training pipeline must add (e.g. ``{"label_full"}``)."""
        return frozenset()

    def prepare_training(self, vocabulary: Vocabulary | None, setting: str) -> None:
        """Called once before training with the dataset's classes (``.seen`` set for zero-shot
        settings; ``None`` for label-free data) and ``setting`` (``"supervised"``,
        ``"inductive"`` or ``"transductive"``). Inductive labels index ``vocabulary.seen``."""

    def count_targets(self, batch: dict[str, Any]) -> float | None:
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
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")
