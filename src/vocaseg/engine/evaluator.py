"""The evaluator: any method on any dataset through the shared inference path, scored with one
int64 confusion matrix (specs/datasets-and-metrics.md §4-§6).

``evaluate`` encodes the vocabulary once, runs ``vocaseg.inference.predict.predict_scores`` on
batches of equal-size images, turns scores into labels (argmax or a named background protocol) and
accumulates at the GT's resolution. Under torchrun every process takes every world_size-th sample
(no padding, so nothing is counted twice); matrices are summed and the evaluated count checked.
A video dataset (one with ``.videos``) also gets VC8/VC16 (``video_eval.py``); its processes take
whole videos and ``limit`` counts videos.
A sample that cannot be read stops the run (``on_error="stop"``, a :class:`DatasetError` naming the
file) or is skipped and listed in the result (``"skip"``), never silently dropped.

``write_results`` writes ``metrics.json`` (summaries under every semantics plus the record of
everything that moves the numbers), ``per_class.csv`` and ``confusion.npz``, atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vocaseg import __version__
from vocaseg.engine.distributed import all_gather_objects
from vocaseg.engine.video_eval import VideoScorer, shard_videos
from vocaseg.errors import DatasetError, UserError
from vocaseg.inference.background import BackgroundProtocol, parse_background
from vocaseg.inference.predict import predict_scores
from vocaseg.io import atomic_open, atomic_path, write_json
from vocaseg.metrics import SEMANTICS, ConfusionMatrix, class_statistics, summarize
from vocaseg.models.base import SegmentationModel
from vocaseg.text.vocab import Vocabulary

HEADLINE_KEYS = ("mIoU", "mAcc", "pAcc", "fwIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "VC8", "VC16")


@dataclass
class EvalResult:
    """What one evaluation produced: the matrix, its summaries and the settings record."""

    confusion: np.ndarray  # int64 [C, C], rows = GT
    class_names: list[str]
    summaries: dict[str, dict[str, Any]]  # semantics -> metrics.summarize(...)
    headline: str  # semantics of :attr:`summary`
    evaluated: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seen: list[int] | None = None
    record: dict[str, Any] = field(default_factory=dict)
    visuals: list[tuple[str, Any]] = field(default_factory=list)  # (file name, PIL image)

    @property
    def summary(self) -> dict[str, float]:
        """Scalar metrics under the headline semantics (``mIoU``, ``pAcc``, ...)."""
        chosen = self.summaries[self.headline]
        return {key: chosen[key] for key in HEADLINE_KEYS if key in chosen}


def state_dict_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's tensors (names, dtypes, shapes, bytes) in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def vocabulary_sha256(vocabulary: Vocabulary) -> str:
    """SHA-256 of the class list as a file would hold it (one class per line, ``;`` synonyms)."""
    text = "\n".join("; ".join(names) for names in vocabulary.classes) + "\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _sample_file(dataset: Any, index: int) -> str:
    """Best name for sample ``index``: the reader's image path if it lists samples, else the index."""
    samples = getattr(dataset, "samples", None)
    try:
        image = getattr(samples[index], "image", None)
    except (TypeError, IndexError, KeyError):
        image = None
    return str(image) if image is not None else f"sample #{index}"


def _load(dataset: Any, index: int, num_classes: int, ignore_index: int) -> dict[str, Any]:
    """Read and check one sample; any problem is a DatasetError naming the file."""
    try:
        item = dataset[index]
    except (UserError, OSError, ValueError) as err:
        raise DatasetError(f"{_sample_file(dataset, index)}: {err}") from None
    name = str(item.get("path", _sample_file(dataset, index)))
    image, label = np.asarray(item["image"]), np.asarray(item["label"])
    if image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(f"{name}: image has shape {image.shape}, expected [H, W, 3]")
    if label.shape != image.shape[:2]:
        raise DatasetError(f"{name}: label size {label.shape} differs from image {image.shape[:2]}")
    bad = (label != ignore_index) & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise DatasetError(
            f"{name}: label value {int(label[bad][0])} is outside [0, {num_classes}) and not the "
            f"ignore value {ignore_index}; fix the label file or its decoder"
        )
    return {"image": image, "label": label.astype(np.int64), "path": name, "index": index}


def _batches(
    dataset: Any,
    indices: Iterable[int],
    batch_size: int,
    num_classes: int,
    ignore_index: int,
    on_error: str,
    skipped: list[dict[str, Any]],
    bar: tqdm,
) -> Iterator[list[dict[str, Any]]]:
    """Batches of up to ``batch_size`` consecutive samples of equal image size."""
    batch: list[dict[str, Any]] = []
    for index in indices:
        bar.update(1)
        try:
            sample = _load(dataset, index, num_classes, ignore_index)
        except DatasetError as err:
            if on_error == "stop":
                raise DatasetError(f"{err} (pass --on-error skip to skip and count it)") from None
            skipped.append(
                {"index": index, "file": _sample_file(dataset, index), "reason": str(err)}
            )
            bar.set_postfix(skipped=len(skipped))
            continue
        if batch and sample["image"].shape != batch[0]["image"].shape:
            yield batch
            batch = []
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def model_record(model: SegmentationModel) -> dict[str, Any]:
    """What about the model moves numbers: name, config, weights hash, preprocessing, precision."""
    try:
        config = model.config_dict()
    except NotImplementedError:
        config = None
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return {
        "model": model.name or type(model).__name__,
        "config": config,
        "templates": (config or {}).get("templates"),
        "weights_sha256": state_dict_sha256(model),
        "preprocess": dataclasses.asdict(model.preprocess),
        "window": {"crop": model.preprocess.window, "stride": model.preprocess.stride},
        "precision": str(dtype).replace("torch.", ""),
        "notes": model.result_notes(),
    }


def evaluate(
    model: SegmentationModel,
    dataset: Any,
    vocabulary: Vocabulary | None = None,
    *,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    batch_size: int = 1,
    semantics: Sequence[str] = SEMANTICS,
    seen: Sequence[int] | None = None,
    on_error: str = "stop",
    background: str | BackgroundProtocol | None = None,
    progress: bool = True,
    save_vis: int | None = None,
    vc_gt: str = "raw",
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (the ``vocaseg.data`` reader interface).

    ``vocabulary`` defaults to ``dataset.classes``; ``background`` names a protocol of §4.1 (it may
    change the vocabulary the model scores); ``seen`` adds seen/unseen/hIoU; the first
    ``semantics`` entry is the headline. ``save_vis`` keeps overlays of the first N images.
    A video dataset adds ``VC8``/``VC16`` to every summary; ``limit`` then counts videos and
    ``vc_gt`` picks the GT VC compares (``"raw"`` label values, as VSPW's reference, or
    ``"mapped"`` trainIds).
    """
    if on_error not in ("stop", "skip"):
        raise UserError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    unknown = [s for s in semantics if s not in SEMANTICS]
    if unknown or not semantics:
        raise UserError(f"unknown metric semantics {unknown}; choose from {', '.join(SEMANTICS)}")
    vocabulary = vocabulary if vocabulary is not None else dataset.classes
    class_names = list(dataset.class_names)
    num_classes, ignore_index = len(class_names), int(dataset.ignore_index)
    if len(vocabulary) != num_classes:
        raise UserError(
            f"the vocabulary has {len(vocabulary)} classes but the dataset has {num_classes}; "
            "pass the dataset's class list (or one with the same order and count)"
        )
    protocol = parse_background(background)
    queries = protocol.vocabulary(vocabulary)
    rank, world = _dist_info()
    scorer = None
    if getattr(dataset, "videos", None) is not None:
        videos, indices, total = shard_videos(dataset.videos, limit, rank, world)  # whole videos
        scorer = VideoScorer(dataset, videos, vc_gt)
    else:
        total = len(dataset) if limit is None else min(limit, len(dataset))
        indices = range(rank, total, world)  # shard without padding

    model = model.to(device).eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    skipped: list[dict[str, Any]] = []
    visuals: list[tuple[str, Any]] = []
    unit = "img" if scorer is None else "frame"
    bar = tqdm(total=len(indices), desc="eval", unit=unit, disable=not progress or rank != 0)
    with torch.inference_mode():
        text = model.encode_vocabulary(queries)
        for batch in _batches(
            dataset, indices, batch_size, num_classes, ignore_index, on_error, skipped, bar
        ):
            images = torch.from_numpy(np.stack([s["image"] for s in batch]))  # [B, H, W, 3]
            images = images.permute(0, 3, 1, 2).float().to(device)  # [B, 3, H, W], 0-255
            labels = protocol.labels(predict_scores(model, images, text, queries))  # [B, H, W]
            for sample, pred in zip(batch, labels):
                matrix.update(pred, torch.from_numpy(sample["label"]).to(pred.device))
                if scorer is not None:
                    scorer.update(sample["index"], pred, sample["label"])
                if save_vis and rank == 0 and len(visuals) < save_vis:
                    visuals.append(_visual(sample, pred, class_names))
    bar.close()

    local = matrix.count
    matrix.all_reduce()
    if scorer is not None:
        scorer.all_reduce()
    skipped = [entry for part in all_gather_objects(skipped) for entry in part]
    if matrix.count + len(skipped) != total:
        raise RuntimeError(
            f"evaluated {matrix.count} + skipped {len(skipped)} samples of {total} "
            f"(this process: {local}); the shards do not cover the dataset exactly once"
        )
    seen_ids = sorted(int(i) for i in seen) if seen is not None else None
    summaries = {s: summarize(matrix.matrix, class_names, seen_ids, semantics=s) for s in semantics}
    video: dict[str, Any] = {}
    if scorer is not None:
        for summary in summaries.values():
            summary.update(scorer.summary())
        video = {
            "video": True,
            "videos": len(list(dataset.videos)[:limit]),
            "frames": total,
            **scorer.record(),
        }
    record = {
        **model_record(model),
        "background": protocol.record(),
        "semantics": list(semantics),
        "headline_semantics": semantics[0],
        "class_list": {
            "id": getattr(dataset, "record", {}).get("class_list"),
            "sha256": vocabulary_sha256(vocabulary),
            "model_vocabulary_sha256": vocabulary_sha256(queries),
            "num_classes": num_classes,
        },
        "dataset": dict(getattr(dataset, "record", {})),
        "limit": limit,
        "batch_size": batch_size,
        "device": str(device),
        "world_size": world,
        "evaluated": matrix.count,
        "skipped": skipped,
        **video,
        "vocaseg_version": __version__,
    }
    return EvalResult(
        confusion=matrix.matrix.numpy(),
        class_names=class_names,
        summaries=summaries,
        headline=semantics[0],
        evaluated=matrix.count,
        skipped=skipped,
        seen=seen_ids,
        record=record,
        visuals=visuals,
    )


def _visual(sample: dict[str, Any], pred: torch.Tensor, class_names: list[str]) -> tuple[str, Any]:
    from vocaseg.viz import overlay

    name = Path(sample["path"]).stem + ".png"
    return name, overlay(sample["image"], pred.cpu().numpy(), class_names)


def _jsonable(value: Any) -> Any:
    """NaN -> None (strict JSON), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def per_class_rows(result: EvalResult) -> list[dict[str, Any]]:
    """One row per class with the columns of spec §5 (IoU/Acc in percent, empty where undefined)."""
    stats = class_statistics(result.confusion)
    rows = []
    for c, name in enumerate(result.class_names):
        tp, gt, pred, union = (float(stats[k][c]) for k in ("tp", "gt", "pred", "union"))
        split = "" if result.seen is None else ("seen" if c in result.seen else "unseen")
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
                "valid_detectron2": int(gt > 0),
                "valid_mmseg": int(union > 0),
                "split": split,
            }
        )
    return rows


def write_results(result: EvalResult, out_dir: str | Path) -> Path:
    """Write metrics.json, per_class.csv, confusion.npz (and vis/*.png) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "metrics.json",
        _jsonable(
            {
                "headline": {"semantics": result.headline, **result.summary},
                "summaries": result.summaries,
                "record": result.record,
            }
        ),
    )
    rows = per_class_rows(result)
    with atomic_open(out / "per_class.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out / "confusion.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle, confusion=result.confusion, class_names=np.array(result.class_names)
        )
    for name, image in result.visuals:
        with atomic_path(out / "vis" / name) as tmp:
            image.save(tmp, format="PNG")
    return out


def format_summary(result: EvalResult) -> str:
    """A small table: one row per semantics, the headline marked with ``*``."""
    keys = [k for k in HEADLINE_KEYS if k in result.summaries[result.headline]]
    buffer = io.StringIO()
    buffer.write(f"{'semantics':<12}" + "".join(f"{k:>12}" for k in keys) + "\n")
    for semantics, summary in result.summaries.items():
        mark = "*" if semantics == result.headline else " "
        buffer.write(
            f"{semantics + mark:<12}" + "".join(f"{summary[k]:>12.2f}" for k in keys) + "\n"
        )
    if result.record.get("video"):
        what = f"{result.evaluated} frames of {result.record['videos']} videos"
    else:
        what = f"{result.evaluated} images"
    buffer.write(f"evaluated {what}, skipped {len(result.skipped)}\n")
    for entry in result.skipped:
        buffer.write(f"  skipped {entry['file']}: {entry['reason']}\n")
    return buffer.getvalue()
