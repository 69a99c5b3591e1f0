"""GKC: "Global Knowledge Calibration for Fast Open-Vocabulary Segmentation" (Han, Liu et al.,
ICCV 2023; docs/methods/gkc.md), a Mask2Former whose backbone starts from CLIP's ResNet image
tower and whose 100 mask proposals are classified from their own query features against frozen
CLIP text embeddings, so no CLIP image encoder runs at inference.

- Backbone: CLIP ModifiedResNet without its attention pool (:mod:`.layers.resnet_backbone`),
  BatchNorm frozen by default.
- Head: the deformable-attention pixel decoder and the masked-attention decoder
  (:mod:`.layers.pixel_decoder`, :mod:`.layers.mask_decoder`), 10 prediction points.
- Classifier: e = Linear(ReLU(class feature)) per point; logit = exp(s)·cos(e, [T; e_∅]).
- Inference (Mask2Former's semantic inference): S_k = Σ_q softmax(logits)_qk · σ(mask_q).
- Training (method section, "Text Diversification" and "Text-guided Knowledge
  Distillation"): Hungarian matching per point, mask BCE + dice, cross-entropy over the
  class names and over each image's synonym-rewritten vocabulary (text diversification), and
  text-guided knowledge distillation towards a frozen CLIP ResNet teacher on masked crops
  (:mod:`vocaseg.models.gkc_loss`); with captions, optional caption grounding
  (:mod:`vocaseg.models.gkc_grounding`).
- ``two_stage=True``: the baseline that classifies the same proposals by CLIP's image encoder on
  masked crops (:mod:`vocaseg.models.gkc_two_stage`).

Parameter names follow the released code's checkpoints (``backbone.*``,
``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``); the per-point projections are
``embed_proj.{j}`` / ``kd_proj.{j}`` here (:mod:`vocaseg.models.convert_gkc` maps them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.constants import IMAGENET_MEAN, IMAGENET_STD
from vocaseg.errors import ConfigError
from vocaseg.losses.tgkd import KD_FORMS
from vocaseg.models.base import Batch, InferenceConfig, SegmentationModel, TrainSpec
from vocaseg.models.gkc_loss import TERMS, GKCCriterion, PointOutput, Targets
from vocaseg.models.gkc_two_stage import crop_class_probs, masked_crops
from vocaseg.models.layers.mask_decoder import MaskedAttentionDecoder
from vocaseg.models.layers.matcher import HungarianMatcher
from vocaseg.models.layers.pixel_decoder import PixelDecoder
from vocaseg.models.layers.resnet_backbone import feature_channels, resnet_backbone
from vocaseg.models.registry import register_model
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from collections.abc import Callable

    from vocaseg.models.towers import Towers


@dataclass
class GKCConfig(InferenceConfig):
    """GKC settings (Han et al. ICCV 2023, method and implementation details; the
    released configs' values as defaults)."""

    clip: Annotated[Any, "CLIP ResNet: a known name (RN50, RN101) or CLIPConfig fields"] = "RN50"
    backbone_norm: Annotated[
        Literal["frozen", "bn_train", "syncbn"],
        "backbone BatchNorm: frozen at CLIP's values, trained with batch statistics (released "
        "code; needs >= 8 images per device) or synchronised",
    ] = "frozen"
    pixel_stats: Annotated[
        Literal["imagenet", "clip"], "student input statistics (the released code: ImageNet's)"
    ] = "imagenet"
    hidden_dim: Annotated[int, "width of the pixel decoder, queries and class feature"] = 256
    mask_dim: Annotated[int, "channels of the mask features"] = 256
    num_queries: Annotated[int, "mask proposals"] = 100
    heads: Annotated[int, "attention heads of the pixel decoder and the masked decoder"] = 8
    enc_layers: Annotated[int, "deformable-attention encoder layers"] = 6
    enc_ffn: Annotated[int, "FFN width of the encoder layers"] = 1024
    enc_points: Annotated[int, "sampling points per head and level"] = 4
    dec_layers: Annotated[int, "masked-attention decoder layers (prediction points - 1)"] = 9
    dec_ffn: Annotated[int, "FFN width of the decoder layers"] = 2048
    norm_groups: Annotated[int, "GroupNorm groups of the pixel decoder"] = 32
    templates: Annotated[str, "prompt template set; GKC encodes names verbatim (identity)"] = (
        "identity"
    )
    synonym_mode: Annotated[
        Literal["mean", "first", "joined"],
        "a class with several names ('sofa; couch'): mean of the names' embeddings, the first "
        "name, or the names joined by ', '",
    ] = "mean"
    coco_names: Annotated[
        Literal["processed", "verbatim"],
        "COCO panoptic names in a vocabulary ('wall-other-merged') encoded as trained ('wall') "
        "or verbatim",
    ] = "processed"
    upsample_logits: Annotated[
        bool,
        "upsample mask logits to the input size before the sigmoid (Mask2Former's exact order; "
        "memory K x H x W); off: scores at 1/4 resolution, upsampled after",
    ] = False
    two_stage: Annotated[
        bool, "baseline: classify each proposal by CLIP's image encoder on its masked crop"
    ] = False
    two_stage_size: Annotated[int, "two-stage crop size (CLIP's input)"] = 224
    # training
    num_points: Annotated[int, "points sampled per mask for matching and mask losses"] = 12544
    oversample_ratio: Annotated[float, "PointRend oversampling of the mask-loss points"] = 3.0
    importance_ratio: Annotated[float, "share of the mask-loss points that are most uncertain"] = (
        0.75
    )
    cost_class: Annotated[float, "matching cost weight of −p(label)"] = 2.0
    cost_mask: Annotated[float, "matching cost weight of the mask BCE"] = 5.0
    cost_dice: Annotated[float, "matching cost weight of the mask dice"] = 5.0
    mask_weight: Annotated[float, "loss weight of the mask BCE, per point"] = 5.0
    dice_weight: Annotated[float, "loss weight of the mask dice, per point"] = 5.0
    class_weight: Annotated[float, "loss weight of L_plain (the class names), per point"] = 2.0
    syn_weight: Annotated[
        float, "loss weight of L_syn (rewritten vocabulary), per point; 0: off"
    ] = 2.0
    kd_weight: Annotated[float, "loss weight of TGKD, per point; 0: off (no teacher runs)"] = 2.0
    no_object_weight: Annotated[float, "cross-entropy weight of the no-object class"] = 0.1
    region_dropout: Annotated[float, "probability a matched target is ignored by a CE loss"] = 0.5
    td_threshold: Annotated[
        float, "text diversification: draw only synonyms scoring above this (with scores)"
    ] = 0.1
    td_mask_padding: Annotated[
        bool,
        "padded columns of the per-image vocabularies get −inf (off: the empty text's "
        "embedding, as the released code's zero-token rows)",
    ] = True
    kd_form: Annotated[
        Literal["released", "paper", "vision_guided"], "TGKD loss form (vocaseg.losses.tgkd)"
    ] = "released"
    kd_teacher_feature: Annotated[
        Literal["attn_g", "attn_l"],
        "teacher region embedding: the attention pool's global token or its local tokens' mean",
    ] = "attn_g"
    kd_max_instances: Annotated[int, "distilled segments per forward pass at most (random)"] = 200
    grounding: Annotated[
        Literal["auto", "on", "off"] | bool,
        "caption grounding: auto (on when the data gives captions, data.options.captions), on "
        "(captions required) or off; true/false read as on/off",
    ] = "auto"
    ground_weight: Annotated[float, "loss weight of the caption grounding, per point"] = 2.0
    ground_max_regions: Annotated[
        int, "matched queries per image that grounding aligns at most (random)"
    ] = 25
    short_side: int | None = 800
    max_long_side: int | None = 1333
    window: int | None = None
    pad: Literal["center", "bottom_right"] = "bottom_right"
    size_divisor: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.clip, dict):
            from vocaseg.clip.model import CLIPConfig

            self.clip = CLIPConfig.from_dict(self.clip)
        if isinstance(self.grounding, bool):  # YAML reads on/off as booleans
            self.grounding = "on" if self.grounding else "off"
        if self.kd_form not in KD_FORMS:
            raise ConfigError(f"kd_form must be one of {', '.join(KD_FORMS)}")
        positive = (
            "hidden_dim", "num_queries", "dec_layers", "num_points", "two_stage_size",
            "ground_max_regions",
        )  # fmt: skip
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("region_dropout", "td_threshold", "importance_ratio"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key} must lie in [0, 1], got {getattr(self, key)}")


class MaskFormerHead(nn.Module):
    """``pixel_decoder`` + ``predictor`` (the released ``sem_seg_head``): res2..res5 ->
    ``dec_layers`` + 1 predictions of class features and mask logits."""

    def __init__(self, channels: tuple[int, int, int, int], cfg: GKCConfig) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(
            channels,
            dim=cfg.hidden_dim,
            mask_dim=cfg.mask_dim,
            depth=cfg.enc_layers,
            heads=cfg.heads,
            points=cfg.enc_points,
            ffn_dim=cfg.enc_ffn,
            groups=cfg.norm_groups,
        )
        self.predictor = MaskedAttentionDecoder(
            dim=cfg.hidden_dim,
            heads=cfg.heads,
            layers=cfg.dec_layers,
            queries=cfg.num_queries,
            ffn_dim=cfg.dec_ffn,
            mask_dim=cfg.mask_dim,
            class_dim=cfg.hidden_dim,
        )

    def forward(self, features: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        mask_features, memories = self.pixel_decoder(features)
        return self.predictor(memories, mask_features)


def _coco_name_map() -> dict[str, str]:
    """COCO panoptic names as listed ('wall-other-merged') -> as GKC trains on them ('wall')."""
    from vocaseg.data.classlists import load_class_list
    from vocaseg.data.synonyms import normalize_class_name

    names = load_class_list("coco_panoptic").class_names
    return {name: normalize_class_name(name) for name in names if "-" in name}


class GKC(SegmentationModel):
    """GKC on a CLIP ResNet; learnable: ``backbone``, ``sem_seg_head``, the projections, e_∅, s, τ."""

    frozen_modules = ("clip",)
    training_only_modules = ("teacher",)
    runtime_keys = (
        "templates", "synonym_mode", "coco_names", "upsample_logits", "two_stage_size",
    )  # fmt: skip
    chunkable = True

    def __init__(self, cfg: GKCConfig, towers: Towers | None) -> None:
        super().__init__()
        if towers is None or towers.config.is_vit:
            raise ConfigError(
                "GKC needs a CLIP ResNet (its backbone starts from the ResNet image tower); use "
                "RN50 or RN101 weights, not a ViT"
            )
        self.config = cfg
        self.clip = towers.clip
        clip_cfg = towers.config
        source = towers.teacher if towers.training else None
        if towers.training and source is None:  # two_stage: the image tower is an inference one
            source = towers.clip.visual
        if towers.teacher is not None:
            self.teacher = towers.teacher
        self.backbone = resnet_backbone(clip_cfg, cfg.backbone_norm, source)
        self.sem_seg_head = MaskFormerHead(feature_channels(clip_cfg), cfg)
        dim, points = clip_cfg.embed_dim, cfg.dec_layers + 1
        self.embed_proj = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(cfg.hidden_dim, dim)) for _ in range(points)
        )
        self.kd_proj = nn.ModuleList(nn.Linear(cfg.hidden_dim, dim) for _ in range(points))
        self.non_object_embedding = nn.Parameter(torch.randn(1, dim) * clip_cfg.text_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.text_kd_logit_scale = nn.Parameter(torch.tensor(1.0))
        # Parameters no loss reads stay out of the optimiser (and of DDP's gradient reduction).
        if cfg.kd_weight == 0:
            self.kd_proj.requires_grad_(False)
        if cfg.kd_weight == 0 or cfg.kd_form != "released":
            self.text_kd_logit_scale.requires_grad_(False)
        if cfg.pixel_stats == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean = tuple(255.0 * m for m in clip_cfg.mean)
            std = tuple(255.0 * s for s in clip_cfg.std)
        self.setup_inference(mean, std, size_divisor=32)
        self.criterion = GKCCriterion(
            HungarianMatcher(cfg.cost_class, cfg.cost_mask, cfg.cost_dice, cfg.num_points),
            cfg.num_points,
            cfg.oversample_ratio,
            cfg.importance_ratio,
            cfg.no_object_weight,
            cfg.region_dropout,
            cfg.kd_form,
            cfg.ground_max_regions,
        )
        self._embedder: Any = None
        self._names: dict[str, str] = _coco_name_map() if cfg.coco_names == "processed" else {}
        self._class_names: list[str] | None = None  # the training vocabulary's names

    def settings_changed(self, keys: set[str]) -> None:
        if keys & {"templates", "synonym_mode"}:
            self._embedder = None
        if "coco_names" in keys:
            self._names = _coco_name_map() if self.config.coco_names == "processed" else {}

    # ----- text ----------------------------------------------------------------------------------

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from vocaseg.text.embed import TextEmbedder

            cfg = self.config
            self._embedder = TextEmbedder(
                self.clip, templates=cfg.templates, synonym_mode=cfg.synonym_mode
            )
        return self._embedder

    def encode_vocabulary(self, vocabulary: Vocabulary) -> Tensor:
        """Unit-norm class embeddings [K, D] (COCO panoptic names as trained, see coco_names)."""
        if self._names:
            vocabulary = Vocabulary(
                tuple(tuple(self._names.get(n, n) for n in names) for names in vocabulary.classes),
                vocabulary.seen,
                vocabulary.background,
            )
        return self.embedder.embed(vocabulary).to(self.device)

    # ----- inference -----------------------------------------------------------------------------

    def predictions(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Every prediction point's ``class_feature`` [B, Q, C] and ``mask_logits`` [B, Q, H/4, W/4]
        for normalised ``images`` [B, 3, H, W] (H, W multiples of 32)."""
        return self.sem_seg_head(self.backbone.forward_features(images))

    def class_logits(self, class_feature: Tensor, text: Tensor, point: int = -1) -> Tensor:
        """exp(s)·cos(embed_proj(c), [text; e_∅]) in fp32: [B, Q, K + 1] for text [K, D]."""
        with torch.autocast(class_feature.device.type, enabled=False):
            embedding = self.embed_proj[point](class_feature.float())  # [B, Q, D]
            bank = torch.cat([text.float(), self.non_object_embedding.float()])  # [K + 1, D]
            cosine = F.normalize(embedding, dim=-1) @ F.normalize(bank, dim=-1).T
            return self.logit_scale.float().exp() * cosine

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        """Normalised ``images`` [B, 3, H, W] and class rows ``text`` [K, D] -> scores
        S_k = Σ_q p_qk·σ(mask_q): [B, K, H/4, W/4] (or [B, K, H, W] with ``upsample_logits``)."""
        probs, masks = self._class_probs_and_masks(images, text)
        with torch.autocast(images.device.type, enabled=False):
            return torch.einsum("bqk,bqhw->bkhw", probs, masks)

    def dense_chunks(
        self, images: Tensor, text: Tensor, scored: Vocabulary
    ) -> Callable[[range], Tensor]:
        """p and σ(mask) once; S_k for a run of classes at a time."""
        probs, masks = self._class_probs_and_masks(images, text)

        def rows(classes: range) -> Tensor:
            with torch.autocast(images.device.type, enabled=False):
                part = probs[..., classes.start : classes.stop]  # [B, Q, k]
                return torch.einsum("bqk,bqhw->bkhw", part, masks)

        return rows

    def _class_probs_and_masks(self, images: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Class probabilities p [B, Q, K] of the proposals (softmax over K + 1 with e_∅, or the
        two-stage CLIP probabilities) and their masks σ(mask) [B, Q, h, w], in fp32."""
        final = self.predictions(images)[-1]
        mask_logits = final["mask_logits"]
        with torch.autocast(images.device.type, enabled=False):
            probs = self.class_logits(final["class_feature"], text).softmax(-1)  # [B, Q, K + 1]
            if self.config.two_stage:
                probs = self._two_stage_probs(images, mask_logits, text, probs)
            else:
                probs = probs[..., :-1]
            masks = mask_logits.float()
            if self.config.upsample_logits:
                masks = F.interpolate(
                    masks, size=images.shape[-2:], mode="bilinear", align_corners=False
                )
            return probs, masks.sigmoid()

    def _two_stage_probs(
        self, images: Tensor, mask_logits: Tensor, text: Tensor, probs: Tensor
    ) -> Tensor:
        """[B, Q, K]: CLIP's class probabilities of each proposal's masked crop, times the
        proposal's probability of being an object under GKC's own classifier."""
        batch, queries = mask_logits.shape[:2]
        mean, std = self.preprocess.mean, self.preprocess.std
        crops = masked_crops(
            images.float(), mask_logits.float(), mean, std, self.config.two_stage_size
        )
        clip_probs = crop_class_probs(self.clip.visual, crops, text, self.clip.logit_scale)
        objectness = 1 - probs[..., -1:]  # [B, Q, 1]
        return clip_probs.view(batch, queries, -1) * objectness

    # ----- training ------------------------------------------------------------------------------

    def prepare_training(self, spec: TrainSpec) -> None:
        """Keep the class names and encode every name the data may draw (each class's synonyms)."""
        vocabulary = spec.vocabulary
        if vocabulary is None:
            raise ConfigError("gkc trains on labelled panoptic data; use the gkc_panoptic pipeline")
        if self.config.kd_weight > 0 and self._teacher() is None:
            raise ConfigError(
                "kd_weight > 0 needs the CLIP teacher, which only a training build has; build "
                "the model with training=True (vocaseg train does) or set kd_weight: 0"
            )
        self._class_names = vocabulary.class_names
        with torch.no_grad():
            self.embedder.embed_names(vocabulary.queries)  # fills the memory cache once

    def _teacher(self) -> nn.Module | None:
        teacher = getattr(self, "teacher", None)
        return teacher if teacher is not None else self.clip.visual

    def count_targets(self, batch: Batch) -> float:
        """Ground-truth masks of this micro-batch (the normaliser of the mask losses)."""
        return float(sum(len(labels) for labels in batch["labels"]))

    def forward_train(self, batch: Batch) -> dict[str, Any]:
        """Every prediction point's head outputs and the teacher's region embeddings.

        ``batch``: ``image`` [B, 3, H, W]; per image (lists) ``labels`` [N_b], ``syn_labels``
        [N_b], ``masks`` [N_b, H, W], ``vocabulary`` (names), ``teacher_crops`` [N_b, 3, S, S].
        """
        if self._class_names is None:
            raise ConfigError("call prepare_training(spec) before training GKC")
        points = self.predictions(batch["image"].to(self.device))
        outputs: dict[str, Any] = {"points": points}
        if self.config.kd_weight > 0:
            outputs["kd_index"], outputs["teacher"] = self._teacher_targets(batch)
        return outputs

    def _teacher_targets(self, batch: Batch) -> tuple[list[Tensor], list[Tensor]]:
        """The targets distilled this iteration (all, or ``kd_max_instances`` drawn at random
        keeping each image's own) and the teacher's unit-norm embeddings of their crops."""
        counts = [len(labels) for labels in batch["labels"]]
        chosen = torch.arange(sum(counts))
        if len(chosen) > self.config.kd_max_instances:
            chosen = torch.randperm(len(chosen))[: self.config.kd_max_instances].sort().values
        starts = torch.tensor([0, *counts]).cumsum(0)
        index = [chosen[(chosen >= a) & (chosen < b)] - a for a, b in pairwise(starts)]
        crops = [
            c.to(self.device)[i.to(self.device)] for c, i in zip(batch["teacher_crops"], index)
        ]
        teacher = self._teacher()
        flat = torch.cat(crops)  # [n, 3, S, S]
        with torch.no_grad():
            if flat.shape[0] == 0:
                rows = flat.new_zeros(0, self.non_object_embedding.shape[1])
            elif self.config.kd_teacher_feature == "attn_g":
                rows = teacher(flat.to(teacher.conv1.weight.dtype))  # [n, D]
            else:
                tokens = teacher.attnpool.forward_tokens(teacher.forward_features(flat)["res5"])
                rows = tokens[:, 1:].mean(dim=1)  # [n, D]: the local tokens' mean
            rows = F.normalize(rows.float(), dim=-1)
        return index, list(rows.split([len(i) for i in index]))

    def _vocabulary_text(self, vocabularies: list[list[str]]) -> tuple[Tensor, list[Tensor]]:
        """Text rows of the batch's per-image vocabularies: padded [B, V, D] (padding rows are
        the empty text's embedding) and each image's own [V_b, D]."""
        names = sorted({n for vocab in vocabularies for n in vocab} | {""})
        table = self.embedder.embed_names(names).float()  # [U, D]
        row = {name: i for i, name in enumerate(names)}
        width = max(len(v) for v in vocabularies)
        own = [table[torch.tensor([row[n] for n in v], device=table.device)] for v in vocabularies]
        padded = table[row[""]].expand(len(vocabularies), width, -1).clone()
        for b, rows in enumerate(own):
            padded[b, : len(rows)] = rows
        return padded, own

    def _caption_words(self, batch: Batch) -> list[Tensor] | None:
        """Text embeddings [W_b, D] of each image's caption nouns when grounding is active (the
        batch has ``caption_words``, and grounding is not off), else None."""
        words = batch.get("caption_words")
        if self.config.grounding == "off" or self.config.ground_weight == 0:
            return None
        if words is None:
            if self.config.grounding == "on":
                raise ConfigError(
                    "model.grounding: on needs captions; set data.options.captions (the file of "
                    "'vocaseg gkc caption-nouns') or grounding: auto"
                )
            return None
        names = sorted({w for image in words for w in image})
        dim = self.non_object_embedding.shape[1]
        table = self.embedder.embed_names(names).float() if names else torch.zeros(0, dim)
        row = {name: i for i, name in enumerate(names)}
        return [table[[row[w] for w in image]].to(self.device) for image in words]

    def loss(self, batch: Batch, outputs: dict[str, Any]) -> dict[str, Tensor]:
        """The weighted sum over prediction points of 5·BCE + 5·dice + 2·L_plain + 2·L_syn
        + 2·L_kd (+ 2·L_ground with captions) (fp32); each term is also returned summed over the
        points."""
        cfg, device = self.config, self.device
        labels = [lab.to(device).long() for lab in batch["labels"]]
        syn_labels = [lab.to(device).long() for lab in batch.get("syn_labels", labels)]
        vocabularies = batch.get("vocabulary") or [list(self._class_names)] * len(labels)
        with torch.no_grad():
            class_text = self.embedder.embed_names(self._class_names).float()  # [K, D]
            syn_text, own_text = self._vocabulary_text(vocabularies)
            words = self._caption_words(batch)
        kd_index = outputs.get("kd_index") or [torch.zeros(0, dtype=torch.long)] * len(labels)
        targets = Targets(
            labels=labels,
            syn_labels=syn_labels,
            masks=batch["masks"],
            kd_index=kd_index,
            teacher=outputs.get("teacher") or [None] * len(labels),
            kd_text=[t[s[i.to(device)]] for t, s, i in zip(own_text, syn_labels, kd_index)],
            words=words,
        )
        num_masks = batch.get("num_targets")
        if num_masks is None:
            num_masks = torch.tensor(max(float(sum(len(x) for x in labels)), 1.0))
        num_masks = torch.as_tensor(num_masks, dtype=torch.float32, device=device)
        weights = {
            "mask": cfg.mask_weight,
            "dice": cfg.dice_weight,
            "plain": cfg.class_weight,
            "syn": cfg.syn_weight,
            "kd": cfg.kd_weight,
            "ground": cfg.ground_weight if words is not None else 0.0,
        }
        sums = {term: torch.zeros((), device=device) for term in TERMS if weights[term] > 0}
        for j, point in enumerate(outputs["points"]):
            projected = self._project(point, j, class_text, syn_text, own_text, words is not None)
            terms = self.criterion(projected, targets, num_masks, self.text_kd_logit_scale)
            for term in sums:
                sums[term] = sums[term] + terms[term]
        total = sum(weights[term] * value for term, value in sums.items())
        return {"loss": total, **{f"loss_{term}": value for term, value in sums.items()}}

    def _project(
        self,
        point: dict[str, Tensor],
        index: int,
        class_text: Tensor,
        syn_text: Tensor,
        own_text: list[Tensor],
        ground: bool = False,
    ) -> PointOutput:
        """Point ``index``'s class features projected into CLIP space and scored (fp32)."""
        cfg = self.config
        feature = point["class_feature"].float()  # [B, Q, C]
        projected = self.embed_proj[index](feature)  # [B, Q, D]
        embedding = F.normalize(projected, dim=-1)
        scale = self.logit_scale.exp()
        no_object = self.non_object_embedding.float()  # [1, D]
        bank = F.normalize(torch.cat([class_text, no_object]), dim=-1)  # [K + 1, D]
        plain = scale * embedding @ bank.T  # [B, Q, K + 1]
        syn = None
        if cfg.syn_weight > 0:
            banks = torch.cat([syn_text, no_object[None].expand(len(syn_text), -1, -1)], dim=1)
            syn = scale * torch.einsum("bqd,bvd->bqv", embedding, F.normalize(banks, dim=-1))
            if cfg.td_mask_padding:  # [B, Q, V + 1]: columns past each image's own names
                width = torch.tensor([len(t) for t in own_text], device=syn.device)
                column = torch.arange(syn.shape[-1], device=syn.device)
                padding = (column[None] >= width[:, None]) & (column[None] < syn.shape[-1] - 1)
                syn = syn.masked_fill(padding[:, None, :], float("-inf"))
        student = self.kd_proj[index](feature) if cfg.kd_weight > 0 else None
        regions = projected if ground else None
        return PointOutput(plain, syn, point["mask_logits"].float(), student, regions, scale)


TINY_CLIP = {
    "embed_dim": 32, "image_size": 64, "vision_layers": [1, 1, 1, 1], "vision_width": 8,
    "vision_patch_size": None, "text_width": 32, "text_layers": 1, "text_heads": 2,
}  # fmt: skip
TINY = {
    "clip": TINY_CLIP, "hidden_dim": 32, "mask_dim": 32, "num_queries": 8, "heads": 4,
    "enc_layers": 1, "enc_ffn": 64, "enc_points": 2, "dec_layers": 3, "dec_ffn": 64,
    "norm_groups": 8, "num_points": 256, "short_side": 64, "max_long_side": 0,
}  # fmt: skip
TINY_TRAIN = {
    "model": {},
    "data": {"options": {"crop": 64, "teacher_size": 32, "scale_range": [0.9, 1.1]}},
}


def gkc_towers(cfg: GKCConfig) -> dict[str, str]:
    """The text tower classifies; the image tower teaches in training, and also classifies the
    crops at inference in the two-stage baseline."""
    return {"text": "inference", "visual": "inference" if cfg.two_stage else "training"}


def _build(cfg: GKCConfig, towers: Towers | None) -> GKC:
    return GKC(cfg, towers)


register_model(
    "gkc",
    GKCConfig,
    "GKC: fast open-vocabulary segmentation (Mask2Former on CLIP ResNet, no image encoder at "
    "inference)",
    towers=gkc_towers,
    trained=True,
    pipeline="gkc_panoptic",
    tiny=TINY,
    tiny_train=TINY_TRAIN,
)(_build)
