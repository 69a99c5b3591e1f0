"""GKC's training objective at one prediction point (Han et al., "Global Knowledge Calibration for
Fast Open-Vocabulary Segmentation", ICCV 2023, method section and implementation details; docs/methods/gkc.md).

Per point: Hungarian matching on the plain 133-name logits and point-sampled mask costs
(:class:`~vocaseg.models.layers.matcher.HungarianMatcher`), then with those matches

- ``mask`` / ``dice``: point-sampled BCE and dice of the matched masks over the global mask count;
- ``plain``: cross-entropy over the class names + no-object, with region dropout;
- ``syn``: the same over each image's rewritten vocabulary (text diversification);
- ``kd``: text-guided knowledge distillation of the matched queries' student embeddings towards
  the frozen CLIP's region embeddings (:func:`vocaseg.losses.tgkd.tgkd_loss`);
- ``ground`` (with captions): caption grounding of up to ``max_regions`` matched queries' class
  embeddings per image against the caption's noun embeddings
  (:func:`vocaseg.models.gkc_grounding.grounding_loss`).

Everything here runs in fp32 on tensors the model has already projected; it holds no parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vocaseg.losses.mask_losses import classification_loss, mask_losses
from vocaseg.losses.tgkd import tgkd_loss
from vocaseg.models.gkc_grounding import grounding_loss
from vocaseg.models.layers.matcher import HungarianMatcher

TERMS = ("mask", "dice", "plain", "syn", "kd", "ground")


@dataclass
class Targets:
    """One micro-batch's targets, per image: ``labels`` [N_b] class ids, ``syn_labels`` [N_b]
    columns of the image's rewritten vocabulary, ``masks`` [N_b, H, W] (bool or float),
    ``kd_index`` [n_b] the targets distilled this iteration and ``teacher`` [n_b, D] their
    frozen-CLIP region embeddings, ``kd_text`` [n_b, D] the text embeddings of their names;
    ``words`` [W_b, D] the text embeddings of the caption nouns drawn for grounding (or None)."""

    labels: Sequence[Tensor]
    syn_labels: Sequence[Tensor]
    masks: Sequence[Tensor]
    kd_index: Sequence[Tensor]
    teacher: Sequence[Tensor]
    kd_text: Sequence[Tensor]
    words: Sequence[Tensor] | None = None


@dataclass
class PointOutput:
    """One prediction point, projected: ``plain_logits`` [B, Q, K + 1], ``syn_logits``
    [B, Q, V + 1] (padding columns −inf), ``mask_logits`` [B, Q, h, w], ``kd_student`` [B, Q, D];
    for grounding, ``regions`` [B, Q, D] (the un-normalised class embeddings) and ``scale`` exp(s)."""

    plain_logits: Tensor
    syn_logits: Tensor | None
    mask_logits: Tensor
    kd_student: Tensor | None
    regions: Tensor | None = None
    scale: Tensor | None = None


def matched_rows(
    matches: tuple[Tensor, Tensor], kd_index: Tensor, num_targets: int
) -> tuple[Tensor, Tensor]:
    """(query index, position in ``kd_index``) of the distilled targets that this point matched,
    in ``kd_index`` order: the final point's target order at every point."""
    query_idx, target_idx = matches
    query_of = torch.full((num_targets,), -1, dtype=torch.long)
    query_of[target_idx.cpu()] = query_idx.cpu()
    queries = query_of[kd_index.cpu()]
    keep = (queries >= 0).nonzero(as_tuple=True)[0]  # all kept unless queries < targets
    return queries[keep], keep


class GKCCriterion:
    """Losses of one prediction point, unweighted (``TERMS``); weights are the caller's."""

    def __init__(
        self,
        matcher: HungarianMatcher,
        num_points: int,
        oversample_ratio: float,
        importance_ratio: float,
        no_object_weight: float,
        region_dropout: float,
        kd_form: str,
        max_regions: int = 25,
    ) -> None:
        self.matcher = matcher
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        self.no_object_weight = no_object_weight
        self.region_dropout = region_dropout
        self.kd_form = kd_form
        self.max_regions = max_regions

    def __call__(
        self, point: PointOutput, targets: Targets, num_masks: Tensor, kd_scale: Tensor
    ) -> dict[str, Tensor]:
        mask_logits = point.mask_logits
        matches = self.matcher(
            point.plain_logits.detach(),
            mask_logits.detach(),
            [{"labels": lab, "masks": m} for lab, m in zip(targets.labels, targets.masks)],
        )
        losses = self._mask_terms(mask_logits, targets.masks, matches, num_masks)
        losses["plain"] = classification_loss(
            point.plain_logits, matches, targets.labels, self.no_object_weight, self.region_dropout
        )
        if point.syn_logits is not None:
            losses["syn"] = classification_loss(
                point.syn_logits,
                matches,
                targets.syn_labels,
                self.no_object_weight,
                self.region_dropout,
            )
        if point.kd_student is not None:
            losses["kd"] = self._kd(point.kd_student, targets, matches, kd_scale)
        if point.regions is not None and targets.words is not None:
            losses["ground"] = self._ground(point, targets.words, matches)
        return losses

    def _mask_terms(
        self,
        mask_logits: Tensor,
        masks: Sequence[Tensor],
        matches: Sequence[tuple[Tensor, Tensor]],
        num_masks: Tensor,
    ) -> dict[str, Tensor]:
        device = mask_logits.device
        pred = torch.cat([mask_logits[b, q.to(device)] for b, (q, _) in enumerate(matches)])
        if pred.shape[0] == 0:  # no target in the batch: keep the graph, add nothing
            zero = mask_logits.sum() * 0.0
            return {"mask": zero, "dice": zero.clone()}
        target = torch.cat(
            [masks[b].to(device)[t.to(device)].float() for b, (_, t) in enumerate(matches)]
        )  # [N, H, W]
        terms = mask_losses(
            pred,
            target,
            num_masks,
            self.num_points,
            self.oversample_ratio,
            self.importance_ratio,
        )
        return {"mask": terms["mask"], "dice": terms["dice"]}

    def _kd(
        self,
        student: Tensor,
        targets: Targets,
        matches: Sequence[tuple[Tensor, Tensor]],
        kd_scale: Tensor,
    ) -> Tensor:
        """TGKD over the distilled targets, grouped by image: student rows of the queries this
        point matched to them, the teacher's rows and the text rows of their names."""
        students, teachers, texts = [], [], []
        for b, match in enumerate(matches):
            queries, keep = matched_rows(match, targets.kd_index[b], len(targets.labels[b]))
            keep = keep.to(student.device)
            students.append(student[b, queries.to(student.device)])  # [n_b, D]
            teachers.append(targets.teacher[b][keep].float())
            texts.append(targets.kd_text[b][keep].float())
        loss = tgkd_loss(students, teachers, texts, kd_scale, self.kd_form)
        return loss + student.sum() * 0.0  # every projection stays in the graph (DDP)

    def _ground(
        self, point: PointOutput, words: Sequence[Tensor], matches: Sequence[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """Caption grounding of each image's matched queries (at most ``max_regions``, drawn at
        random) against its caption's words, over the micro-batch's captions and images."""
        regions = point.regions
        device = regions.device
        chosen = []
        for query_idx, _ in matches:
            if len(query_idx) > self.max_regions:
                query_idx = query_idx[torch.randperm(len(query_idx))[: self.max_regions]]
            chosen.append(query_idx.to(device))
        size, dim = regions.shape[0], regions.shape[-1]
        region_rows = regions.new_zeros(size, max(1, *(len(q) for q in chosen)), dim)
        region_mask = torch.zeros(region_rows.shape[:2], dtype=torch.bool, device=device)
        word_rows = regions.new_zeros(size, max(1, *(len(w) for w in words)), dim)
        word_mask = torch.zeros(word_rows.shape[:2], dtype=torch.bool, device=device)
        for b, (queries, rows) in enumerate(zip(chosen, words)):
            region_rows[b, : len(queries)] = regions[b, queries]  # [R_b, D]
            region_mask[b, : len(queries)] = True
            word_rows[b, : len(rows)] = rows.to(device).float()  # [W_b, D]
            word_mask[b, : len(rows)] = True
        loss = grounding_loss(word_rows, word_mask, region_rows, region_mask, point.scale)
        return loss + regions.sum() * 0.0  # every projection stays in the graph (DDP)
