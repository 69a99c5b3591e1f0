"""The evaluator: any method on any dataset through the shared inference path, scored with one
int64 confusion matrix (docs/protocols.md).

``evaluate`` encodes the vocabulary once, runs ``vocaseg.inference.predict.predict_labels`` on
batches of equal-size images (the model's background protocol is part of it; many classes are
scored a chunk at a time, with the same labels) and accumulates at the GT's resolution. Under torchrun every process takes every world_size-th sample
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
from vocaseg.dist import all_gather_objects, dist_info
from vocaseg.engine.video_eval import VideoScorer, shard_videos
from vocaseg.errors import DatasetError, UserError
from vocaseg.hashing import tensors_sha256, text_sha256
from vocaseg.inference.predict import predict_labels
from vocaseg.io import atomic_open, atomic_path, write_json
from vocaseg.metrics import SEMANTICS, ConfusionMatrix, per_class_rows, summarize
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


def vocabulary_sha256(vocabulary: Vocabulary) -> str:
    """SHA-256 of the class list as a file would hold it (one class per line, ``;`` synonyms)."""
    return text_sha256("\n".join("; ".join(names) for names in vocabulary.classes) + "\n")


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
    """What about the model moves numbers: name, config, weights (its own and the CLIP's),
    preprocessing, background protocol, precision and protocol notes."""
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    clip = model.clip_source or {}
    config = model.config_dict()
    return {
        "model": model.name or type(model).__name__,
        "config": config,
        "templates": config.get("templates"),
        "weights_sha256": tensors_sha256(model.saved_state_dict()),
        "clip_weights": clip.get("weights"),
        "clip_sha256": clip.get("sha256"),
        "clip_frozen_sha256": model.frozen_state_sha256() or None,
        "preprocess": dataclasses.asdict(model.preprocess),
        "window": {"crop": model.preprocess.window, "stride": model.preprocess.stride},
        "background": model.background.record(),
        "precision": str(dtype).replace("torch.", ""),
        "notes": model.result_notes(),
    }


@dataclass
class _Shard:
    """This process's share of the dataset: sample indices, the total over all processes, and
    the video scorer of a video dataset."""

    indices: Sequence[int]
    total: int
    scorer: VideoScorer | None = None
    videos: int | None = None


def _check_arguments(on_error: str, batch_size: int, semantics: Sequence[str]) -> None:
    if on_error not in ("stop", "skip"):
        raise UserError(f"on_error must be 'stop' or 'skip', not {on_error!r}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    unknown = [s for s in semantics if s not in SEMANTICS]
    if unknown or not semantics:
        raise UserError(f"unknown metric semantics {unknown}; choose from {', '.join(SEMANTICS)}")


def _eval_vocabulary(
    model: SegmentationModel, dataset: Any, vocabulary: Vocabulary | None
) -> Vocabulary:
    """The dataset's classes (or ``vocabulary``, same count), prepared for the model's background
    protocol, which must not need a class the dataset does not have."""
    vocabulary = vocabulary if vocabulary is not None else dataset.classes
    num_classes = len(dataset.class_names)
    if len(vocabulary) != num_classes:
        raise UserError(
            f"the vocabulary has {len(vocabulary)} classes but the dataset has {num_classes}; "
            "pass the dataset's class list (or one with the same order and count)"
        )
    prepared = model.background.prepare(vocabulary)
    if len(prepared) != num_classes:
        raise UserError(
            f"background protocol {model.background.id} needs a background class, and this "
            f"dataset has none; use bg:none, or a dataset with one (e.g. voc21, pc60)"
        )
    return prepared


def _shard(dataset: Any, limit: int | None, vc_gt: str) -> _Shard:
    """Every world_size-th sample from this rank (no padding); whole videos for video datasets."""
    info = dist_info()
    if getattr(dataset, "videos", None) is not None:
        videos, indices, total = shard_videos(dataset.videos, limit, info.rank, info.world_size)
        return _Shard(
            indices, total, VideoScorer(dataset, videos, vc_gt), len(list(dataset.videos)[:limit])
        )
    total = len(dataset) if limit is None else min(limit, len(dataset))
    return _Shard(range(info.rank, total, info.world_size), total)


def _score(
    model: SegmentationModel,
    dataset: Any,
    vocabulary: Vocabulary,
    shard: _Shard,
    *,
    device: str | torch.device,
    batch_size: int,
    on_error: str,
    progress: bool,
    save_vis: int | None,
) -> tuple[ConfusionMatrix, list[dict[str, Any]], list[tuple[str, Any]]]:
    """Run the model over this rank's samples: the confusion matrix, skipped samples, visuals."""
    class_names = list(dataset.class_names)
    num_classes, ignore_index = len(class_names), int(dataset.ignore_index)
    matrix = ConfusionMatrix(num_classes, ignore_index)
    skipped: list[dict[str, Any]] = []
    visuals: list[tuple[str, Any]] = []
    main = dist_info().is_main
    unit = "img" if shard.scorer is None else "frame"
    bar = tqdm(total=len(shard.indices), desc="eval", unit=unit, disable=not progress or not main)
    with torch.inference_mode():
        text = model.text_for(vocabulary)
        batches = _batches(
            dataset, shard.indices, batch_size, num_classes, ignore_index, on_error, skipped, bar
        )
        for batch in batches:
            images = torch.from_numpy(np.stack([s["image"] for s in batch]))  # [B, H, W, 3]
            images = images.permute(0, 3, 1, 2).float().to(device)  # [B, 3, H, W], 0-255
            labels = predict_labels(model, images, text, vocabulary, keep_scores=False).label
            for sample, pred in zip(batch, labels):
                matrix.update(pred, torch.from_numpy(sample["label"]).to(pred.device))
                if shard.scorer is not None:
                    shard.scorer.update(sample["index"], pred, sample["label"])
                if save_vis and main and len(visuals) < save_vis:
                    visuals.append(_visual(sample, pred, class_names))
    bar.close()
    return matrix, skipped, visuals


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
    progress: bool = True,
    save_vis: int | None = None,
    vc_gt: str = "raw",
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (the ``vocaseg.data`` reader interface).

    ``vocabulary`` defaults to ``dataset.classes``; the model's background protocol (its config)
    decides how background is scored; ``seen`` adds seen/unseen/hIoU; the first ``semantics``
    entry is the headline. ``save_vis`` keeps overlays of the first N images. A video dataset adds
    ``VC8``/``VC16`` to every summary; ``limit`` then counts videos and ``vc_gt`` picks the GT VC
    compares (``"raw"`` label values, as VSPW's reference, or ``"mapped"`` trainIds).
    """
    _check_arguments(on_error, batch_size, semantics)
    vocabulary = _eval_vocabulary(model, dataset, vocabulary)
    shard = _shard(dataset, limit, vc_gt)
    model = model.to(device).eval()
    matrix, skipped, visuals = _score(
        model,
        dataset,
        vocabulary,
        shard,
        device=device,
        batch_size=batch_size,
        on_error=on_error,
        progress=progress,
        save_vis=save_vis,
    )
    local = matrix.count
    matrix.all_reduce()
    if shard.scorer is not None:
        shard.scorer.all_reduce()
    skipped = [entry for part in all_gather_objects(skipped) for entry in part]
    if matrix.count + len(skipped) != shard.total:
        raise RuntimeError(
            f"evaluated {matrix.count} + skipped {len(skipped)} samples of {shard.total} "
            f"(this process: {local}); the shards do not cover the dataset exactly once"
        )
    return _result(
        model,
        dataset,
        vocabulary,
        shard,
        matrix,
        skipped,
        visuals,
        semantics,
        seen,
        limit,
        batch_size,
        device,
    )


def _result(
    model: SegmentationModel,
    dataset: Any,
    vocabulary: Vocabulary,
    shard: _Shard,
    matrix: ConfusionMatrix,
    skipped: list[dict[str, Any]],
    visuals: list[tuple[str, Any]],
    semantics: Sequence[str],
    seen: Sequence[int] | None,
    limit: int | None,
    batch_size: int,
    device: str | torch.device,
) -> EvalResult:
    """Summaries under every semantics plus the record of everything that moves the numbers."""
    class_names = list(dataset.class_names)
    seen_ids = sorted(int(i) for i in seen) if seen is not None else None
    summaries = {s: summarize(matrix.matrix, class_names, seen_ids, semantics=s) for s in semantics}
    video: dict[str, Any] = {}
    if shard.scorer is not None:
        for summary in summaries.values():
            summary.update(shard.scorer.summary())
        video = {
            "video": True,
            "videos": shard.videos,
            "frames": shard.total,
            **shard.scorer.record(),
        }
    scored = model.background.scored_vocabulary(vocabulary)
    record = {
        **model_record(model),
        "semantics": list(semantics),
        "headline_semantics": semantics[0],
        "class_list": {
            "id": getattr(dataset, "record", {}).get("class_list"),
            "sha256": vocabulary_sha256(vocabulary),
            "model_vocabulary_sha256": vocabulary_sha256(scored),
            "num_classes": len(class_names),
        },
        "dataset": dict(getattr(dataset, "record", {})),
        "limit": limit,
        "batch_size": batch_size,
        "device": str(device),
        "world_size": dist_info().world_size,
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
    rows = per_class_rows(result.confusion, result.class_names, result.seen)
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
        named = str(entry["file"]) in entry["reason"]  # most reasons name their file already
        buffer.write(f"  skipped {'' if named else str(entry['file']) + ': '}{entry['reason']}\n")
    return buffer.getvalue()
