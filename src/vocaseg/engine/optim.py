"""Optimiser and learning-rate schedules of the training engine.

- :func:`param_groups`: trainable parameters grouped by learning-rate and weight-decay multipliers
  (name substrings, longest match wins) and no-decay kinds (norm / embedding / bias / 1-D).
- :func:`build_optimizer`: AdamW over those groups; each group keeps its peak lr in ``initial_lr``.
- :class:`Schedule`: a stateless per-iteration lr factor: poly with linear warm-up
  (docs/methods/tagclip.md §6), cosine with warm-up (MAE's ``util/lr_sched.py``;
  docs/methods/zeroseg.md "Settings"), step decay (GKC's released Mask2Former recipe;
  docs/methods/gkc.md), constant. Being a pure function of the step, it resumes exactly from the
  step alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vocaseg.engine.train_config import OptimConfig, ScheduleConfig

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)


def _longest_match(name: str, table: dict[str, float]) -> float:
    keys = [key for key in table if key in name]
    return table[max(keys, key=len)] if keys else 1.0


def _no_decay_names(model: nn.Module, kinds: Iterable[str]) -> set[str]:
    kinds = set(kinds)
    names: set[str] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param_name, param in module.named_parameters(recurse=False):
            full = prefix + param_name
            if (
                ("norm" in kinds and isinstance(module, _NORMS))
                or ("embedding" in kinds and isinstance(module, nn.Embedding))
                or ("bias" in kinds and param_name == "bias")
                or ("1d" in kinds and param.ndim < 2)
            ):
                names.add(full)
    extra = getattr(model, "no_weight_decay", None)
    if callable(extra) and kinds:
        names |= set(extra())
    return names


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters of ``model`` in AdamW groups, one per (lr, weight decay) pair.

    Each group carries ``initial_lr`` (its peak lr) and ``names`` (for logs and tests).
    """
    no_decay = _no_decay_names(model, cfg.no_decay)
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = cfg.lr * _longest_match(name, cfg.lr_mult)
        decay = 0.0 if name in no_decay else cfg.weight_decay * _longest_match(name, cfg.decay_mult)
        group = groups.setdefault(
            (lr, decay),
            {"params": [], "names": [], "lr": lr, "initial_lr": lr, "weight_decay": decay},
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW (decoupled decay) over :func:`param_groups`; fused/foreach left to torch defaults."""
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


class Schedule:
    """lr factor (relative to each group's ``initial_lr``) at iteration ``step`` of ``total``."""

    def __init__(self, cfg: ScheduleConfig, total: int, warmup: int, base_lr: float) -> None:
        self.cfg, self.total, self.warmup, self.base_lr = cfg, total, warmup, base_lr

    def __call__(self, step: int) -> float:
        cfg, total, warmup = self.cfg, self.total, self.warmup
        min_ratio = cfg.min_lr / self.base_lr
        if cfg.name == "cosine":
            if step < warmup:
                return step / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if cfg.name == "poly":
            factor = (1 - min_ratio) * (1 - min(step, total) / total) ** cfg.power + min_ratio
        elif cfg.name == "step":
            factor = cfg.gamma ** sum(step >= m for m in cfg.milestones)
        else:
            factor = 1.0
        if step < warmup:
            factor *= 1 - (1 - step / warmup) * (1 - cfg.warmup_ratio)
        return factor

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for iteration ``step``; returns the factor."""
        factor = self(step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return factor


def build_schedule(cfg: ScheduleConfig, base_lr: float, steps_per_epoch: int) -> Schedule:
    """Resolve epoch-based lengths with ``steps_per_epoch`` optimiser steps per epoch."""
    total = cfg.iterations if cfg.iterations is not None else round(cfg.epochs * steps_per_epoch)
    warmup = cfg.warmup_iters or round(cfg.warmup_epochs * steps_per_epoch)
    return Schedule(cfg, max(1, total), warmup, base_lr)
