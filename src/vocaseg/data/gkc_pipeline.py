"""The ``gkc_panoptic`` training pipeline of GKC (Han et al., "Global Knowledge Calibration for Fast
Open-Vocabulary Segmentation", ICCV 2023, "Text Diversification" and implementation details).

COCO panoptic (``data.dataset: coco_panoptic``; ``data.root`` / ``data.layout`` as for
:func:`vocaseg.data.panoptic.load_panoptic`) through :func:`panoptic_training_sample`: one mask and
class per non-crowd segment of the augmented crop, the teacher's crops from the un-augmented image,
and, fresh at every iteration, each image's vocabulary rewritten with drawn synonyms
(:func:`vocaseg.data.synonyms.sample_vocabulary`, the released ``thresRand`` mode).

Options (``data.options``):

| key | meaning | default |
|---|---|---|
| ``synonyms`` | synonym file ``{class: [class, synonym, ...]}``; ``none``: no text diversification | the shipped ``coco133_synonyms.json`` |
| ``scores`` | per-instance synonym scores of ``vocaseg gkc score-synonyms`` (draw above ``td_threshold``) | none: draw from the whole list |
| ``td_threshold`` | score threshold | the model's ``td_threshold`` |
| ``crop``, ``scale_range``, ``flip_prob`` | training crop size, scale jitter, flip probability | 512, [0.8, 1.2], 0.5 |
| ``teacher_size`` | teacher crop size; ``null``: no crops (needs ``kd_weight: 0``) | 224 |
| ``keep_empty_targets`` | keep segments the crop empties | false |
| ``captions`` | caption nouns file of ``vocaseg gkc caption-nouns``: each sample carries ``caption_words``, the nouns of one caption drawn for caption grounding | none: no grounding |
| ``synthetic`` | ``{train: N, val: N, size: S, seed: 0}``: write generated COCO-panoptic data under ``data.root`` first, when absent (quickstart, tests) | none |

Images whose annotation lists no non-crowd segment are left out (one warning line); images the
captions file does not caption train without grounding words (counted, one warning line).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vocaseg.config import from_dict
from vocaseg.data.batch import TrainSpec
from vocaseg.data.caption_nouns import CaptionNouns, read_caption_nouns, sample_caption_words
from vocaseg.data.panoptic import PanopticDataset, load_panoptic, panoptic_training_sample
from vocaseg.data.pipelines import PipelineContext, TrainData, register_pipeline
from vocaseg.data.synonyms import (
    SynonymScores,
    coco133_class_names,
    load_synonyms,
    normalize_class_name,
    read_synonym_scores,
    sample_vocabulary,
    synonyms_sha256,
)
from vocaseg.errors import ConfigError, DatasetError, VocasegWarning
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from vocaseg.engine.train_config import TrainConfig

LIST_KEYS = (
    "masks", "labels", "syn_labels", "segment_ids", "teacher_crops", "vocabulary", "caption_words",
)  # fmt: skip


@dataclass
class GKCDataOptions:
    """``data.options`` of the ``gkc_panoptic`` pipeline (see the module docstring)."""

    synonyms: str | None = None
    scores: str | None = None
    td_threshold: float | None = None
    crop: int = 512
    scale_range: tuple[float, float] = (0.8, 1.2)
    flip_prob: float = 0.5
    teacher_size: int | None = 224
    keep_empty_targets: bool = False
    captions: str | None = None
    synthetic: dict[str, int] = field(default_factory=dict)


def parse_options(options: dict[str, Any]) -> GKCDataOptions:
    parsed = from_dict(GKCDataOptions, options, "data.options")
    if parsed.crop < 32:
        raise ConfigError(f"data.options.crop must be >= 32 pixels, got {parsed.crop}")
    if parsed.td_threshold is not None and not 0.0 <= parsed.td_threshold <= 1.0:
        raise ConfigError(
            f"data.options.td_threshold must lie in [0, 1], got {parsed.td_threshold}"
        )
    unknown = set(parsed.synthetic) - {"train", "val", "size", "seed"}
    if unknown:
        raise ConfigError(
            f"data.options.synthetic: unknown keys {sorted(unknown)}; use train, val, size, seed"
        )
    return parsed


class GKCSource:
    """Panoptic samples with GKC's augmentation, teacher crops and per-iteration vocabularies."""

    def __init__(
        self,
        dataset: PanopticDataset,
        options: GKCDataOptions,
        class_names: list[str],
        synonyms: dict[str, list[str]] | None,
        scores: SynonymScores | None,
        threshold: float,
        captions: CaptionNouns | None = None,
    ) -> None:
        self.dataset, self.options = dataset, options
        self.captions = captions
        self.class_names, self.synonyms = class_names, synonyms
        self.scores, self.threshold = scores, threshold

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """One training example: ``image`` [3, crop, crop]; ``masks`` [N, crop, crop] bool,
        ``labels`` [N], ``syn_labels`` [N], ``segment_ids`` [N], ``teacher_crops``
        [N, 3, S, S], ``vocabulary`` (the image's class names after renaming), ``valid_size``;
        with captions, ``caption_words`` (the nouns drawn for grounding, normalised as class names)."""
        item = self.dataset[index]
        opts = self.options
        sample = panoptic_training_sample(
            item["image"],
            item["segment_ids"],
            item["segments"],
            rng,
            crop=opts.crop,
            scale_range=tuple(opts.scale_range),
            flip_prob=opts.flip_prob,
            teacher_size=opts.teacher_size,
            keep_empty_targets=opts.keep_empty_targets,
        )
        labels = sample["labels"].tolist()
        if self.synonyms is None:
            vocabulary, syn_labels = list(self.class_names), labels
        else:
            scores = None
            if self.scores is not None:
                scores = self.scores.for_segments(item["image_id"], sample["segment_ids"].tolist())
            vocabulary, syn_labels = sample_vocabulary(
                self.class_names, self.synonyms, labels, rng, scores, self.threshold
            )
        sample["syn_labels"] = torch.tensor(syn_labels, dtype=torch.long)
        sample["vocabulary"] = vocabulary
        if self.captions is not None:
            words = sample_caption_words(self.captions.captions(item["image_id"]), rng)
            sample["caption_words"] = [normalize_class_name(w) for w in words]
        return sample


def _with_segments(dataset: PanopticDataset) -> PanopticDataset:
    """``dataset`` without the images whose annotation lists no non-crowd segment (one warning)."""
    kept = [
        sample
        for sample in dataset.samples
        if any(
            not segment.get("iscrowd", 0)
            for segment in dataset.annotations[sample.label.name]["segments_info"]
        )
    ]
    dropped = len(dataset.samples) - len(kept)
    if not kept:
        raise DatasetError(
            f"coco_panoptic {dataset.record['split']}: no image has a non-crowd segment in "
            f"{dataset.record['json']}; check the annotation JSON"
        )
    if dropped:
        warnings.warn(
            f"coco_panoptic {dataset.record['split']}: {dropped} image(s) without any non-crowd "
            "segment are left out of training",
            VocasegWarning,
            stacklevel=2,
        )
    return PanopticDataset(kept, dataset.annotations, {**dataset.record, "count": len(kept)})


def _synonym_setup(
    options: GKCDataOptions, class_names: list[str], threshold: float
) -> tuple[dict[str, list[str]] | None, SynonymScores | None, dict[str, Any]]:
    """Synonym lists and scores named by the options, and what to record about them."""
    if options.synonyms is not None and str(options.synonyms).lower() == "none":
        if options.scores is not None:
            raise ConfigError("data.options.scores needs synonym lists; remove synonyms: none")
        return None, None, {"synonyms": None}
    synonyms = load_synonyms(options.synonyms, class_names)
    sha = synonyms_sha256(options.synonyms)
    scores = None
    if options.scores is not None:
        scores = read_synonym_scores(options.scores, expected_sha256=sha)
    record = {
        "synonyms": options.synonyms or "coco133_synonyms.json (shipped)",
        "synonyms_sha256": sha,
        "synonym_scores": options.scores,
        "td_threshold": threshold if options.scores is not None else None,
    }
    return synonyms, scores, record


def _caption_setup(
    options: GKCDataOptions, dataset: PanopticDataset, grounding: str
) -> tuple[CaptionNouns | None, dict[str, Any]]:
    """The caption nouns named by the options (checked against the model's ``grounding``) and
    what to record about them."""
    if options.captions is None:
        if grounding == "on":
            raise ConfigError(
                "model.grounding: on needs captions; set data.options.captions to the file of "
                "'vocaseg gkc caption-nouns' or grounding: auto"
            )
        return None, {}
    if grounding == "off":
        raise ConfigError(
            "data.options.captions is set but model.grounding is off; remove one of them"
        )
    captions = read_caption_nouns(options.captions)
    missing = sum(
        1
        for sample in dataset.samples
        if not any(captions.captions(dataset.annotations[sample.label.name]["image_id"]))
    )
    if missing:
        warnings.warn(
            f"coco_panoptic {dataset.record['split']}: {missing} of {len(dataset.samples)} "
            f"image(s) have no caption nouns in {options.captions}; they train without grounding",
            VocasegWarning,
            stacklevel=2,
        )
    record = {
        "captions": options.captions,
        "captions_sha256": captions.sha256,
        "captions_source_sha256": captions.captions_sha256,
        "images_without_captions": missing,
    }
    return captions, record


def write_synthetic(root: Path, spec: dict[str, int]) -> None:
    """Generated COCO-panoptic train/val data under ``root`` unless it is already there."""
    from vocaseg.data.synthetic import make_coco_panoptic_dataset

    size, seed = int(spec.get("size", 64)), int(spec.get("seed", 0))
    for offset, split in enumerate(("train", "val")):
        count = int(spec.get(split, 0))
        json_path = root / "coco" / "annotations" / f"panoptic_{split}2017.json"
        if count > 0 and not json_path.is_file():
            make_coco_panoptic_dataset(root, count, size, seed + offset, split, image_ext=".png")


def generate_gkc_data(cfg: TrainConfig, context: PipelineContext) -> None:
    """``data.options.synthetic``: the main process writes the generated data once."""
    options = parse_options(cfg.data.options)
    if options.synthetic and context.dist.is_main:
        if not cfg.data.root:
            raise ConfigError("data.options.synthetic needs data.root: the folder to write into")
        write_synthetic(Path(cfg.data.root), options.synthetic)


@register_pipeline("gkc_panoptic", generate=generate_gkc_data)
def gkc_panoptic_pipeline(cfg: TrainConfig, model: Any, context: PipelineContext) -> TrainData:
    """COCO panoptic instances, teacher crops and text diversification for GKC."""
    data = cfg.data
    if data.dataset not in ("", "coco_panoptic"):
        raise ConfigError(
            f"the gkc_panoptic pipeline reads COCO panoptic (data.dataset: coco_panoptic), not "
            f"{data.dataset!r}; point data.root at another copy of it instead"
        )
    if data.transform:
        raise ConfigError(
            "gkc_panoptic takes its augmentation in data.options (crop, scale_range, flip_prob), "
            "not data.transform"
        )
    if data.zero_shot.setting != "supervised":
        raise ConfigError("gkc_panoptic trains on every COCO panoptic class; remove data.zero_shot")
    options = parse_options(data.options)
    model_cfg = getattr(model, "config", None)
    if options.teacher_size is None and getattr(model_cfg, "kd_weight", 0) > 0:
        raise ConfigError(
            "distillation (model.kd_weight > 0) needs teacher crops; set data.options."
            "teacher_size (224) or model.kd_weight: 0"
        )
    threshold = options.td_threshold
    if threshold is None:
        threshold = float(getattr(model_cfg, "td_threshold", 0.1))
    dataset = _with_segments(load_panoptic(data.root, data.split, data.layout))
    class_names = coco133_class_names()
    synonyms, scores, record = _synonym_setup(options, class_names, threshold)
    names = [synonyms[n] for n in class_names] if synonyms is not None else class_names
    vocabulary = Vocabulary.from_names(names)
    grounding = str(getattr(model_cfg, "grounding", "off"))
    captions, caption_record = _caption_setup(options, dataset, grounding)
    names_record = {"class_names": class_names, **record, **caption_record}
    return TrainData(
        source=GKCSource(dataset, options, class_names, synonyms, scores, threshold, captions),
        spec=TrainSpec(vocabulary=vocabulary, ignore_index=255),
        list_keys=LIST_KEYS,
        split={"setting": "supervised", "seen": class_names, "unseen": []},
        record={**dataset.record, **names_record},
    )


__all__ = [
    "GKCDataOptions",
    "GKCSource",
    "generate_gkc_data",
    "gkc_panoptic_pipeline",
    "parse_options",
    "write_synthetic",
]
