"""Text-guided knowledge distillation (TGKD) of GKC (Han et al., "Global Knowledge Calibration for
Fast Open-Vocabulary Segmentation", ICCV 2023, "Text-guided Knowledge Distillation").

For the matched segments a, c = 1..n_b of one image: student region embeddings s_a, frozen CLIP
region embeddings r_c of the teacher, and text embeddings t_a of the segments' names (all
L2-normalised here). Forms (``kd_form``):

- ``"released"`` (the official code): pairwise terms (τ²⟨t_a, t_c⟩ − ⟨s_a, r_c⟩)² for every
  ordered pair including a = c, plus direct terms ‖s_a − r_a‖²; the loss is the mean over all
  Σn_b² + Σn_b terms of the batch. τ is the learnable ``text_kd_logit_scale``.
- ``"paper"`` (the paper's equation): (1/N) Σ_b Σ_{a,c} | ‖s_a − r_c‖ − ‖t_a − t_c‖ |,
  N = Σn_b; no direct term and no τ.
- ``"vision_guided"`` (the paper's ablation): as ``"paper"`` with ‖s_a − s_c‖ in place of the
  text distance.

Pairs never cross images. Images with no segments contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

KD_FORMS = ("released", "paper", "vision_guided")


def _distance(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean distances [n, m] of unit rows; sqrt is kept away from 0 so gradients stay finite."""
    return (2 - 2 * x @ y.T).clamp(min=1e-12).sqrt()


def tgkd_loss(
    student: Sequence[Tensor],
    teacher: Sequence[Tensor],
    text: Sequence[Tensor],
    scale: Tensor,
    kd_form: str = "released",
) -> Tensor:
    """TGKD loss (scalar) from per-image lists of ``[n_b, D]`` student, teacher and text rows.

    ``scale`` is τ (a 0-d tensor; only the released form reads it). Rows of image b are its
    matched segments in one order shared by the three lists.
    """
    if kd_form not in KD_FORMS:
        raise ValueError(f"unknown kd_form {kd_form!r}; known: {', '.join(KD_FORMS)}")
    if not len(student) == len(teacher) == len(text):
        raise ValueError("student, teacher and text need one entry per image")
    pair_terms: list[Tensor] = []
    direct_terms: list[Tensor] = []
    regions = 0
    for s, r, t in zip(student, teacher, text):
        if s.shape[0] != r.shape[0] or s.shape[0] != t.shape[0]:
            raise ValueError(
                f"one image has {s.shape[0]} student, {r.shape[0]} teacher and {t.shape[0]} text rows"
            )
        if s.shape[0] == 0:
            continue
        regions += s.shape[0]
        s, r, t = (F.normalize(x.float(), dim=-1) for x in (s, r, t))
        if kd_form == "released":
            target = scale.float() ** 2 * (t @ t.T)  # [n, n]
            pair_terms.append((target - s @ r.T).pow(2).flatten())
            direct_terms.append((s - r).pow(2).sum(-1))
        else:
            guide = _distance(t, t) if kd_form == "paper" else _distance(s, s)
            pair_terms.append((_distance(s, r) - guide).abs().flatten())
    if not pair_terms:
        return scale.float().sum() * 0.0
    if kd_form == "released":
        return torch.cat(pair_terms + direct_terms).mean()
    return torch.cat(pair_terms).sum() / regions
