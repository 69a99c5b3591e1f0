"""Segmentation metrics (docs/datasets.md §5): one int64 confusion matrix per dataset,
summarised as mIoU, mAcc, pAcc, fwIoU and seen/unseen/hIoU under detectron2 or MMSeg semantics,
plus VSPW video consistency VC_n.

The matrix is ``M[g, p]``: rows are ground truth, columns predictions. Pixels whose GT is the
ignore value are dropped together with their prediction. Summaries are in percent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vocaseg.dist import all_reduce_sum, is_distributed, reduction_device

SEMANTICS = ("detectron2", "mmseg")

ArrayLike = np.ndarray | Tensor


def confusion_matrix(
    pred: ArrayLike, gt: ArrayLike, num_classes: int, ignore_index: int | None = 255
) -> ArrayLike:
    """int64 [C, C] counts of (GT row, prediction column) over pixels whose GT is not ignored.

    ``pred`` and ``gt`` are integer arrays of one shape (numpy or torch). Numpy input returns an
    ndarray; torch input returns a tensor on its device (CPU work runs in numpy, whose bincount is
    far faster there; CUDA work stays on the GPU). GT values other than ``ignore_index`` and
    predictions must lie in [0, C); anything else is a ``ValueError`` naming the value.
    """
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from GT shape {tuple(gt.shape)}"
        )
    on_gpu = isinstance(pred, Tensor) and pred.device.type != "cpu"
    if on_gpu:
        lib, p, g = torch, pred.reshape(-1).long(), torch.as_tensor(gt, device=pred.device)
        g = g.reshape(-1).long()
    else:
        lib = np
        p = (pred.cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)).reshape(-1)
        g = (gt.cpu().numpy() if isinstance(gt, Tensor) else np.asarray(gt)).reshape(-1)
        p, g = p.astype(np.int64, copy=False), g.astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = g != ignore_index
        p, g = p[keep], g[keep]
    for name, values in (("prediction", p), ("GT", g)):
        if values.shape[0] and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0].item()
            raise ValueError(
                f"{name} value {bad} is outside [0, {num_classes}) and is not the ignore value "
                f"{ignore_index}"
            )
    counts = lib.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    matrix = counts.reshape(num_classes, num_classes)  # [C_gt, C_pred]
    if on_gpu or not isinstance(pred, Tensor):
        return matrix
    return torch.from_numpy(matrix)


class ConfusionMatrix:
    """Accumulates a confusion matrix image by image; ``all_reduce`` sums it over ranks."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.count = 0  # images accumulated

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one image [H, W] (or a batch of equal-size images [B, H, W]) to the matrix."""
        pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
        cm = confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.matrix += cm.cpu()
        self.count += pred.shape[0] if pred.ndim == 3 else 1

    def all_reduce(self) -> None:
        """Sum matrix and image count over torch.distributed ranks (no-op when not initialised)."""
        if not is_distributed():
            return
        payload = torch.cat([self.matrix.reshape(-1), torch.tensor([self.count])])
        payload = all_reduce_sum(payload.to(reduction_device())).cpu()
        self.matrix = payload[:-1].reshape(self.num_classes, self.num_classes)
        self.count = int(payload[-1])

    def summarize(self, **kwargs: Any) -> dict[str, Any]:
        """:func:`summarize` of the accumulated matrix."""
        return summarize(self.matrix, **kwargs)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def harmonic_mean(seen: float, unseen: float) -> float:
    """hIoU = 2·S·U / (S + U); NaN if either is NaN, 0 if both are 0."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    total = seen + unseen
    return 2.0 * seen * unseen / total if total > 0 else 0.0


def class_statistics(cm: ArrayLike) -> dict[str, np.ndarray]:
    """Per-class float64 vectors: tp, gt (G_c), pred (P_c), union (U_c)."""
    m = np.asarray(torch.as_tensor(cm).cpu().numpy(), dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {m.shape}")
    tp = np.diag(m)
    gt = m.sum(axis=1)
    pred = m.sum(axis=0)
    return {"tp": tp, "gt": gt, "pred": pred, "union": gt + pred - tp}


def valid_classes(stats: dict[str, np.ndarray], semantics: str) -> np.ndarray:
    """Which classes a mean counts: GT present (detectron2) or non-empty union (mmseg)."""
    return stats["gt"] > 0 if semantics == "detectron2" else stats["union"] > 0


def per_class_rows(
    cm: ArrayLike, class_names: Sequence[str], seen: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """One row per class: pixel counts, IoU and Acc in percent ("" where undefined), whether each
    semantics counts it, and its split ("seen"/"unseen", "" without a split)."""
    s = class_statistics(cm)
    valid = {name: valid_classes(s, name) for name in SEMANTICS}
    seen_ids = None if seen is None else set(int(i) for i in seen)
    rows = []
    for c, name in enumerate(class_names):
        tp, gt, pred, union = (float(s[k][c]) for k in ("tp", "gt", "pred", "union"))
        split = "" if seen_ids is None else ("seen" if c in seen_ids else "unseen")
        rows.append(
            {
                "class_id": c,
                "name": name,
                "gt_pixels": int(gt),
                "pred_pixels": int(pred),
                "tp": int(tp),
                "union": int(union),
                "iou": f"{100 * tp / union:.4f}" if union > 0 else "",
                "acc": f"{100 * tp / gt:.4f}" if gt > 0 else "",
                **{f"valid_{sem}": int(valid[sem][c]) for sem in SEMANTICS},
                "split": split,
            }
        )
    return rows


def summarize(
    cm: ArrayLike,
    class_names: Sequence[str] | None = None,
    seen: Iterable[int] | None = None,
    semantics: str = "detectron2",
) -> dict[str, Any]:
    """mIoU, mAcc, pAcc, fwIoU (percent), per-class IoU and Acc lists, optionally seen/unseen/hIoU.

    ``semantics="detectron2"`` averages IoU over classes present in GT (G_c > 0);
    ``"mmseg"`` over classes with a non-empty union (U_c > 0), so a class predicted but absent from
    GT scores 0. The per-class ``IoU`` list holds NaN where the class does not count.
    ``seen`` (class indices) adds ``mIoU_seen``/``mIoU_unseen`` (NaN-means of the same IoU vector
    over seen and the remaining ids) and their harmonic mean ``hIoU``.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, not {semantics!r}")
    s = class_statistics(cm)
    tp, gt, union = s["tp"], s["gt"], s["union"]
    num_classes = tp.shape[0]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class matrix")
    valid = valid_classes(s, semantics)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(valid, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
        total = gt.sum()
        pacc = tp.sum() / total if total > 0 else np.nan
        fwiou = float(np.sum((gt / total) * np.where(gt > 0, tp / union, 0.0))) if total else np.nan
    result: dict[str, Any] = {
        "semantics": semantics,
        "mIoU": 100 * _nanmean(iou),
        "mAcc": 100 * _nanmean(acc),
        "pAcc": 100 * float(pacc),
        "fwIoU": 100 * float(fwiou),
        "IoU": (100 * iou).tolist(),
        "Acc": (100 * acc).tolist(),
    }
    if class_names is not None:
        result["class_names"] = list(class_names)
    if seen is not None:
        seen_ids = sorted(set(int(i) for i in seen))
        if any(not 0 <= i < num_classes for i in seen_ids):
            raise ValueError(f"seen ids {seen_ids} fall outside [0, {num_classes})")
        unseen_ids = sorted(set(range(num_classes)) - set(seen_ids))
        result["mIoU_seen"] = 100 * _nanmean(iou[seen_ids])
        result["mIoU_unseen"] = 100 * _nanmean(iou[unseen_ids])
        result["hIoU"] = harmonic_mean(result["mIoU_seen"], result["mIoU_unseen"])
        result["seen"] = seen_ids
    return result


def video_consistency(
    preds: Sequence[ArrayLike], gts: Sequence[ArrayLike], n: int = 8
) -> tuple[float, int]:
    """VC_n of one video as (sum of window scores, number of windows), for pooling over videos.

    Follows VSPW's ``VC_perclip.py``: for every window start s in 0..T-n-1 (the last full window is
    skipped, as the reference does), G = pixels whose raw GT is equal in frames s..s+n-1 and
    P = pixels whose prediction is; the window scores |G∩P|/|G|. Raw values (0 and 255 included)
    are compared as-is. A window with empty G is not counted. Frames must already be sorted.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted frames for {len(gts)} GT frames")
    total, count = 0.0, 0
    gt_frames = [np.asarray(torch.as_tensor(g).cpu().numpy()) for g in gts]
    pred_frames = [np.asarray(torch.as_tensor(p).cpu().numpy()) for p in preds]
    for start in range(len(gt_frames) - n):
        same_gt = np.ones(gt_frames[start].shape, dtype=bool)
        same_pred = np.ones(gt_frames[start].shape, dtype=bool)
        for t in range(start + 1, start + n):
            same_gt &= gt_frames[t] == gt_frames[start]
            same_pred &= pred_frames[t] == pred_frames[start]
        stable = same_gt.sum()
        if stable == 0:
            continue
        total += float((same_gt & same_pred).sum() / stable)
        count += 1
    return total, count


class VideoConsistency:
    """Pools VC_n over videos (one ``update`` per whole video); ``all_reduce`` sums over ranks."""

    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.total = 0.0
        self.count = 0

    def update(self, preds: Sequence[ArrayLike], gts: Sequence[ArrayLike]) -> None:
        total, count = video_consistency(preds, gts, self.n)
        self.total += total
        self.count += count

    def all_reduce(self) -> None:
        """Sum (score total, window count) over torch.distributed ranks, in float64."""
        if not is_distributed():
            return
        payload = torch.tensor([self.total, float(self.count)], dtype=torch.float64)
        payload = all_reduce_sum(payload.to(reduction_device()))
        self.total, self.count = float(payload[0]), int(payload[1])

    @property
    def value(self) -> float:
        """VC_n in percent (NaN before any window)."""
        return 100 * self.total / self.count if self.count else float("nan")
