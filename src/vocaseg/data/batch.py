"""What training data hands a method: the :class:`TrainSpec` (once) and :class:`Batch` es (per step).

Shared by the pipelines (which build them) and the models (which read them), so both sides name
the same keys. Per-image entries of varying size (instance masks, teacher crops) are lists; a
pipeline declares them in ``TrainData.list_keys`` and collation never stacks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from torch import Tensor

from vocaseg.text.vocab import Vocabulary


class Batch(TypedDict, total=False):
    """Keys the trainer and pipelines share (a pipeline may add its own, e.g. ``masks``)."""

    image: Tensor  # [B, 3, H, W] normalised
    label: Tensor  # [B, H, W] class ids (inductive: positions in the seen list), ignore elsewhere
    label_full: Tensor  # [B, H, W] unmasked dataset ids (only when the model's train_needs() asks)
    num_targets: Tensor  # () the step's loss normaliser, set by the trainer from count_targets


@dataclass(frozen=True)
class TrainSpec:
    """What a method learns from, handed to ``prepare_training`` once before training.

    ``vocabulary``: the dataset's classes (``.seen`` set under a zero-shot setting) or ``None`` for
    label-free data; ``ignore_index``: the label value of unlabelled pixels; ``zero_shot``:
    ``"inductive"``, ``"transductive"`` or ``None`` (every class seen); ``init``: the record of the
    ``run.init`` weights (``source``, ``method``, ``split``), if any.
    """

    vocabulary: Vocabulary | None
    ignore_index: int = 255
    zero_shot: Literal["inductive", "transductive"] | None = None
    init: dict[str, Any] | None = None

    @property
    def setting(self) -> str:
        """``"inductive"``, ``"transductive"`` or ``"supervised"``."""
        return self.zero_shot or "supervised"
