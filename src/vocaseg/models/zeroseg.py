"""ZeroSeg (Chen et al., "Exploring Open-Vocabulary Semantic Segmentation from CLIP Vision Encoder
Distillation Only", ICCV 2023; docs/methods/zeroseg.md): a segmentation student trained with no
labels and no captions, by distilling a frozen CLIP image encoder into segment tokens.

Student (§3.2): an MAE ViT encoder on a randomly masked image (its parameters keep MAE's names at
the top level of the state dict, so an MAE checkpoint loads through ``run.init``), the MAE
reconstruction decoder, and a GroupViT-style grouping head (``seg_head.*``) whose final segment
tokens s and pooled token are projected into CLIP's embedding space (g_i, z).

Training (§3.3): the teacher (the CLIP image tower, training only, never saved) embeds the full
image and every cell of the 2×2, 3×3 and 4×4 grids; z is pulled to all views (multi-scale L1),
each g_i to its L1-nearest local view (segment matching), plus the MAE pixel loss. The targets
come from a pre-computed cache or from the teacher inside the step (the ``image_folder`` pipeline).

Inference (§4.1, GroupViT's protocol): the CLIP text tower embeds the class names; pixels follow
the chained soft assignments to their segment, each segment takes its class probabilities (with
the top-k filter); under ``bg:groupvit`` every window adds GroupViT's background channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from torch import Tensor, nn

from vocaseg.background import GroupViTBackground
from vocaseg.constants import IMAGENET_MEAN, IMAGENET_STD
from vocaseg.data.distillation import TeacherSetup
from vocaseg.data.teacher_views import MultiScaleCropTeacher, ViewSpec
from vocaseg.errors import ConfigError
from vocaseg.hashing import tensors_sha256
from vocaseg.losses.distill import multiscale_l1, segment_matching_l1
from vocaseg.losses.reconstruction import masked_patch_mse
from vocaseg.models.base import Batch, InferenceConfig, SegmentationModel
from vocaseg.models.layers.group_scoring import (
    classify_segments,
    groupvit_background,
    pixel_scores,
    segment_onehot,
)
from vocaseg.models.layers.grouping import SegHeadOutput, SegmentationHead
from vocaseg.models.layers.mae import MaeDecoderMixin, MaeEncoderMixin, MaskedTokens, patchify
from vocaseg.models.registry import register_model

if TYPE_CHECKING:
    from collections.abc import Callable

    from vocaseg.background import BackgroundProtocol
    from vocaseg.models.towers import Towers
    from vocaseg.text.vocab import Vocabulary


@dataclass
class ZeroSegConfig(InferenceConfig):
    """ZeroSeg settings (paper §3-§4; MAE and GroupViT for what the paper takes from them; the
    options the paper leaves open are marked in docs/methods/zeroseg.md)."""

    clip: Annotated[
        Any,
        "the CLIP: its image tower teaches (training only), its text tower names the segments; "
        "a known name (ViT-L/14) or CLIPConfig fields",
    ] = "ViT-L/14"
    img_size: Annotated[
        int, "training crop size; the encoder's positional table is built for it"
    ] = 224
    patch_size: Annotated[int, "ViT patch size"] = 16
    embed_dim: Annotated[int, "encoder width"] = 768
    depth: Annotated[int, "encoder blocks"] = 12
    num_heads: Annotated[int, "encoder attention heads"] = 12
    mlp_ratio: Annotated[float, "MLP width / block width (encoder and decoder)"] = 4.0
    decoder_embed_dim: Annotated[int, "reconstruction decoder width"] = 512
    decoder_depth: Annotated[int, "reconstruction decoder blocks"] = 8
    decoder_num_heads: Annotated[int, "reconstruction decoder attention heads"] = 16
    mask_ratio: Annotated[float, "share of patches removed in training (0.6 in the paper)"] = 0.6
    seg_dim: Annotated[int, "segmentation head width (a Linear maps the encoder to it)"] = 768
    seg_num_heads: Annotated[int, "segmentation head attention heads"] = 12
    seg_depths: Annotated[tuple[int, ...], "blocks per head stage"] = (2, 2, 1)
    seg_group_tokens: Annotated[tuple[int, ...], "group tokens per head stage"] = (32, 8, 0)
    seg_output_groups: Annotated[tuple[int, ...], "segments out of each grouping"] = (32, 8)
    seg_input: Annotated[
        Literal["visible", "full"],
        "head input in training: the encoder's visible tokens, or an extra unmasked pass",
    ] = "visible"
    seg_drop_path: Annotated[float, "head drop path, rising linearly to this"] = 0.1
    gumbel_tau: Annotated[float, "Gumbel-softmax temperature of the hard assignment"] = 1.0
    assign_eps: Annotated[float, "added to each group's assignment mass when pooling"] = 1.0
    proj_hidden_dim: Annotated[int, "hidden width of the projector into CLIP space"] = 4096
    proj_norm: Annotated[Literal["none", "bn", "ln"], "norm inside the projector"] = "none"
    teacher_mode: Annotated[
        Literal["cache", "online"],
        "teacher targets from a pre-computed cache (data.options.cache) or inside each step",
    ] = "cache"
    teacher_crop_source: Annotated[
        Literal["student", "native"],
        "cut the views from the student's crop or from the same region at full resolution",
    ] = "student"
    teacher_grids: Annotated[tuple[int, ...], "view grids n×n (1: the full image first)"] = (
        1,
        2,
        3,
        4,
    )
    rec_weight: Annotated[float, "weight of the masked-patch reconstruction loss"] = 1.0
    ms_weight: Annotated[float, "weight of the multi-scale L1 loss"] = 1.0
    match_weight: Annotated[float, "weight of the segment matching loss (0: off)"] = 1.0
    target_norm: Annotated[Literal["l2", "none"], "normalise the teacher targets"] = "l2"
    pred_norm: Annotated[bool, "L2-normalise z and g before the L1 losses"] = False
    l1_reduce: Annotated[
        Literal["mean", "sum"], "L1 distance: mean over dims, or the sum (literal ||.||_1)"
    ] = "mean"
    norm_pix_loss: Annotated[bool, "standardise each target patch (MAE's recipe)"] = True
    ms_views: Annotated[
        Literal["all", "global"], "multi-scale targets: all views, or the full image only"
    ] = "all"
    templates: Annotated[str, "prompt template set (vocaseg.text.templates)"] = "imagenet80"
    template_agg: Annotated[
        Literal["clip", "groupvit"],
        "template ensembling: normalise each then average (clip), or average then normalise",
    ] = "clip"
    logit_scale: Annotated[float, "multiplies the segment-text cosines before the softmax"] = 100.0
    topk_filter: Annotated[int, "keep the image's top-k classes per segment (0: off)"] = 5
    pos_embed_resize: Annotated[
        Literal["bicubic", "regenerate"],
        "positional table at other input sizes: resized bicubically, or regenerated sin-cos",
    ] = "bicubic"
    short_side: int | None = 448
    max_long_side: int | None = 2048
    window: int | None = 448
    stride: int | None = 224

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.clip, dict):
            from vocaseg.clip.model import CLIPConfig

            self.clip = CLIPConfig.from_dict(self.clip)
        if not 0 <= self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio must lie in [0, 1), got {self.mask_ratio}")
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}"
            )
        stages = len(self.seg_depths)
        if not (len(self.seg_group_tokens) == stages == len(self.seg_output_groups) + 1):
            raise ConfigError(
                "seg_depths and seg_group_tokens need one entry per head stage and "
                f"seg_output_groups one less; got {self.seg_depths}, {self.seg_group_tokens}, "
                f"{self.seg_output_groups}"
            )
        if not self.teacher_grids or self.teacher_grids[0] != 1 or min(self.teacher_grids) < 1:
            raise ConfigError(
                f"teacher_grids must start with 1 (the full image) and hold grid sizes >= 1, got "
                f"{self.teacher_grids}"
            )
        if min(self.rec_weight, self.ms_weight, self.match_weight) < 0:
            raise ConfigError("rec_weight, ms_weight and match_weight must be >= 0")
        if self.topk_filter < 0 or self.logit_scale <= 0:
            raise ConfigError("topk_filter must be >= 0 and logit_scale > 0")


def teacher_views(config: ZeroSegConfig, clip_config: Any) -> ViewSpec:
    """The teacher's views: ``config``'s grids and crop source, the CLIP's input size and pixel
    statistics (``clip_config``)."""
    return ViewSpec(
        grids=config.teacher_grids,
        size=clip_config.image_size,
        crop_source=config.teacher_crop_source,
        mean=clip_config.mean,
        std=clip_config.std,
    )


def multiscale_teacher(visual: nn.Module, views: ViewSpec, name: str) -> MultiScaleCropTeacher:
    """Targets of ``views`` from a CLIP image tower ``visual``, identified by ``name`` and the
    SHA-256 of its tensors. On a GPU the teacher runs under bf16 autocast (the paper's setting)."""
    dtype = next(visual.parameters()).dtype

    def embed(images: Tensor) -> Tensor:  # [N, 3, s, s] -> [N, D]
        cuda = images.device.type == "cuda"
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=cuda):
            return visual(images.to(dtype))

    return MultiScaleCropTeacher(embed, views, name, tensors_sha256(visual.state_dict()))


class ZeroSeg(MaeEncoderMixin, MaeDecoderMixin, SegmentationModel):
    """MAE encoder and decoder (top-level MAE names), grouping head ``seg_head``, the frozen CLIP
    text tower ``clip`` and, in a training build, the frozen CLIP image tower ``teacher``."""

    frozen_modules = ("clip",)
    training_only_modules = ("teacher",)
    runtime_keys = ("templates", "template_agg", "logit_scale", "topk_filter", "pos_embed_resize")
    chunkable = True

    def __init__(self, cfg: ZeroSegConfig, towers: Towers) -> None:
        super().__init__()
        self.config = cfg
        self.clip = towers.clip
        clip_config = towers.config
        self.build_encoder(
            cfg.img_size,
            cfg.patch_size,
            dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            pos_embed_resize=cfg.pos_embed_resize,
        )
        self.build_decoder(
            cfg.img_size // cfg.patch_size,
            cfg.patch_size,
            encoder_dim=cfg.embed_dim,
            dim=cfg.decoder_embed_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_num_heads,
            mlp_ratio=cfg.mlp_ratio,
        )
        self.seg_head = SegmentationHead(
            in_dim=cfg.embed_dim,
            dim=cfg.seg_dim,
            num_heads=cfg.seg_num_heads,
            depths=cfg.seg_depths,
            num_group_tokens=cfg.seg_group_tokens,
            num_output_groups=cfg.seg_output_groups,
            drop_path=cfg.seg_drop_path,
            gumbel_tau=cfg.gumbel_tau,
            assign_eps=cfg.assign_eps,
            proj_dim=clip_config.embed_dim,
            proj_hidden_dim=cfg.proj_hidden_dim,
            proj_norm=cfg.proj_norm,
        )
        if towers.teacher is not None:
            self.teacher = towers.teacher
        self._clip_config = clip_config
        self._teacher_targets: MultiScaleCropTeacher | None = None
        self._embedder: Any = None
        self.setup_inference(IMAGENET_MEAN, IMAGENET_STD, cfg.patch_size)

    def settings_changed(self, keys: set[str]) -> None:
        if keys & {"templates", "template_agg"}:
            self._embedder = None
        self.pos_embed_resize = self.config.pos_embed_resize

    # ----- inference ---------------------------------------------------------------------------

    def encode_vocabulary(self, vocabulary: Vocabulary) -> Tensor:
        """One L2-normalised, template-ensembled CLIP text embedding per class: [C, D]."""
        if self._embedder is None:
            from vocaseg.text.embed import TextEmbedder

            cfg = self.config
            self._embedder = TextEmbedder(
                self.clip, templates=cfg.templates, template_agg=cfg.template_agg
            )
        return self._embedder.embed(vocabulary).to(self.device)

    def segments(
        self, images: Tensor, mask_ratio: float = 0.0
    ) -> tuple[SegHeadOutput, MaskedTokens]:
        """Head output and encoder output for ``images`` [B, 3, H, W] (cls token not grouped)."""
        encoded = self.encode(images, mask_ratio)
        return self.seg_head(encoded.tokens[:, 1:]), encoded

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        """Class scores F [B, C, H, W] at the input size (each pixel holds its segment's class
        probabilities P), plus a last channel holding the image's largest P entry (for the
        background rule): [B, C + 1, H, W]."""
        onehot, probs, best = self._segment_probs(images, text)
        with torch.autocast(images.device.type, enabled=False):
            return torch.cat([pixel_scores(onehot, probs), best], dim=1)

    def dense_chunks(
        self, images: Tensor, text: Tensor, scored: Vocabulary
    ) -> Callable[[range], Tensor]:
        """Segments and their class probabilities once; a run of classes gets its scores, the
        image's largest P entry and each pixel's best class score over all classes (what the
        background rule reads): [B, k + 2, H, W]."""
        onehot, probs, best = self._segment_probs(images, text)
        with torch.autocast(images.device.type, enabled=False):
            top = pixel_scores(onehot, probs.amax(dim=-1, keepdim=True))  # [B, 1, H, W]

        def rows(classes: range) -> Tensor:
            with torch.autocast(images.device.type, enabled=False):
                part = pixel_scores(onehot, probs[..., classes.start : classes.stop])
                return torch.cat([part, best, top], dim=1)

        return rows

    def _segment_probs(self, images: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pixel-to-segment one-hot map [B, S, H, W], segment class probabilities P [B, S, C]
        and the image's largest P entry [B, 1, H, W], in fp32."""
        head, encoded = self.segments(images)
        size = images.shape[-2:]
        cfg = self.config
        with torch.autocast(images.device.type, enabled=False):
            onehot = segment_onehot([a.soft.float() for a in head.assignments], encoded.grid, size)
            probs = classify_segments(
                head.g.float(), head.z.float(), text.float(), cfg.logit_scale, cfg.topk_filter
            )  # [B, S, C]
            best = probs.flatten(1).amax(dim=1).view(-1, 1, 1, 1).expand(-1, 1, *size)
            return onehot, probs, best

    def window_output(
        self, logits: Tensor, scored: Vocabulary, background: BackgroundProtocol
    ) -> Tensor:
        """One window's [B, C + 1, H, W] (or a chunk's [B, k + 2, H, W]) -> its class scores
        [B, C, H, W]; under ``bg:groupvit`` with GroupViT's background channel first:
        [B, 1 + C, H, W] (then windows are averaged)."""
        count = len(scored)
        scores, best = logits[:, :count], logits[:, count : count + 1]
        if background.id != GroupViTBackground.id:
            return scores
        top = logits[:, count + 1 :] if logits.shape[1] > count + 1 else scores
        return torch.cat([groupvit_background(top, best, background.prob_thd), scores], dim=1)

    def class_scores(
        self,
        stitched: Tensor,
        scored: Vocabulary,
        background: BackgroundProtocol,
        state: Tensor | None = None,
    ) -> Tensor:
        """Averaged window outputs -> class scores (without the ``bg:groupvit`` channel)."""
        return stitched[:, 1:] if background.id == GroupViTBackground.id else stitched

    def background_scores(self, stitched: Tensor, background: BackgroundProtocol) -> Tensor | None:
        """Under ``bg:groupvit``, the averaged per-window background channel takes the
        vocabulary's background index; any other protocol applies its own rule."""
        return stitched[:, :1] if background.id == GroupViTBackground.id else None

    # ----- teacher -----------------------------------------------------------------------------

    def teacher_setup(self) -> TeacherSetup:
        """What the ``image_folder`` pipeline needs: crop size, target source and views."""
        cfg = self.config
        views = teacher_views(cfg, self._clip_config)
        return TeacherSetup(cfg.img_size, cfg.teacher_mode, views)

    def multiscale_teacher(self) -> MultiScaleCropTeacher:
        """The teacher targets of this training build (its weights' hash computed once)."""
        teacher = getattr(self, "teacher", None)
        if teacher is None:
            raise ConfigError(
                "this ZeroSeg was built for inference and has no teacher; build it with "
                "create_model(..., training=True) (vocaseg train does)"
            )
        if self._teacher_targets is None:
            name = (self.clip_source or {}).get("weights", "in-memory")
            views = teacher_views(self.config, self._clip_config)
            self._teacher_targets = multiscale_teacher(teacher, views, name)
        return self._teacher_targets

    # ----- training ----------------------------------------------------------------------------

    def forward_train(self, batch: Batch) -> dict[str, Tensor]:
        """``batch``: ``image`` [B, 3, S, S] normalised, and ``targets`` [B, V, D] (cache) or
        ``teacher_image`` (uint8 [B, 3, S', S'] or a list of them; online). Returns the
        reconstruction ``pred`` [B, N, p·p·3] and ``mask`` [B, N], ``z`` [B, D], ``g`` [B, S, D]
        and the ``targets``."""
        cfg = self.config
        images = batch["image"].to(self.device)
        encoded = self.encode(images, cfg.mask_ratio)
        pred = self.decode(encoded.tokens, encoded.ids_restore)
        if cfg.seg_input == "visible":
            head = self.seg_head(encoded.tokens[:, 1:])
        else:
            head, _ = self.segments(images)
        targets = batch.get("targets")
        if targets is None:
            teacher_images = batch.get("teacher_image")
            if teacher_images is None:
                raise ConfigError(
                    "the batch holds neither teacher targets nor teacher images; train through "
                    "the image_folder pipeline"
                )
            targets = self.multiscale_teacher()(teacher_images)
        return {
            "pred": pred,
            "mask": encoded.mask,
            "z": head.z,
            "g": head.g,
            "targets": targets.to(self.device),
        }

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """λ_rec L_rec + λ_ms L_ms + λ_match L_match (paper §3.3), each term logged, plus
        ``skipped``: unreadable images this micro-batch passed over (not a loss)."""
        cfg = self.config
        images = batch["image"].to(outputs["pred"].device)
        target = patchify(images.float(), cfg.patch_size)  # [B, N, p·p·3]
        rec = masked_patch_mse(outputs["pred"], target, outputs["mask"], cfg.norm_pix_loss)
        options = {"target_norm": cfg.target_norm, "pred_norm": cfg.pred_norm}
        options["l1_reduce"] = cfg.l1_reduce
        ms = multiscale_l1(outputs["z"], outputs["targets"], views=cfg.ms_views, **options)
        match = segment_matching_l1(outputs["g"], outputs["targets"], **options)
        total = cfg.rec_weight * rec + cfg.ms_weight * ms + cfg.match_weight * match
        skipped = float(sum(batch.get("skipped", [])))
        return {
            "loss": total,
            "loss_rec": rec,
            "loss_ms": ms,
            "loss_match": match,
            "skipped": torch.tensor(skipped, device=total.device),
        }


#: Tiny random instance for the contract tests: 4×4 tokens at 32 px, width 32, 8 then 4 segments.
TINY = {
    "clip": {
        "embed_dim": 32, "image_size": 32, "vision_layers": 1, "vision_width": 32,
        "vision_patch_size": 16, "vision_heads": 2, "text_width": 32, "text_layers": 1,
        "text_heads": 2,
    },
    "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
    "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
    "seg_dim": 32, "seg_num_heads": 2, "seg_depths": [1, 1, 1], "seg_group_tokens": [8, 4, 0],
    "seg_output_groups": [8, 4], "proj_hidden_dim": 64, "seg_drop_path": 0.0,
    "templates": "single", "short_side": 64, "window": 32, "stride": 16,
}  # fmt: skip
TINY_TRAIN = {"model": {"teacher_mode": "online"}}


def _build(cfg: ZeroSegConfig, towers: Towers) -> ZeroSeg:
    if towers is None:
        raise ConfigError("ZeroSeg needs a CLIP (its text tower and, in training, the teacher)")
    return ZeroSeg(cfg, towers)


register_model(
    "zeroseg",
    ZeroSegConfig,
    "ZeroSeg: segmenter distilled from CLIP's image encoder on unlabelled images (MAE + grouping)",
    towers={"text": "inference", "visual": "training"},
    trained=True,
    pipeline="image_folder",
    tiny=TINY,
    tiny_train=TINY_TRAIN,
)(_build)
