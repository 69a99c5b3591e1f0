"""MaskCLIP and its training-free relatives (SCLIP, ClearCLIP, NACLIP) as one configurable model.

Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022; Wang et al., SCLIP, ECCV 2024;
Lan et al., ClearCLIP, ECCV 2024; Hajimiri et al., NACLIP, WACV 2025 (docs/methods/maskclip.md).
CLIP stays frozen; ``vocaseg.clip.dense`` changes only its last visual layer. ``forward`` scores
patches against prompt-ensembled text embeddings by cosine; ``class_scores`` applies softmax over
the queries and the max over each class's synonyms, then the background protocol runs.

Registered presets: ``maskclip`` (SCLIP's 8-benchmark protocol), ``maskclip-ref`` (the reference
code's protocol), ``sclip``, ``clearclip``, ``naclip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from torch import Tensor

from vocaseg.clip.dense import Attention, dense_features, key_smooth, prompt_denoise
from vocaseg.constants import IMAGENET_MEAN, IMAGENET_STD
from vocaseg.errors import UserError
from vocaseg.models.base import InferenceConfig, SegmentationModel
from vocaseg.models.registry import register_model
from vocaseg.scoring import max_over_queries

if TYPE_CHECKING:
    from collections.abc import Callable

    from vocaseg.background import BackgroundProtocol
    from vocaseg.models.towers import Towers
    from vocaseg.text.vocab import Vocabulary

#: A CLIP ViT small enough for the contract tests (width 64, 2 layers, patch 16).
TINY_VIT = {
    "embed_dim": 32, "image_size": 32, "vision_layers": 2, "vision_width": 64,
    "vision_patch_size": 16, "vision_heads": 4, "text_width": 32, "text_layers": 2,
    "text_heads": 2,
}  # fmt: skip


@dataclass
class MaskCLIPConfig(InferenceConfig):
    """Settings of the training-free dense CLIP family (Zhou et al. ECCV 2022 §3; the variants'
    papers for ``attn``). Inherits the shared inference settings (short side, window, background)."""

    clip: Annotated[Any, "CLIP architecture: a known name (ViT-B/16) or CLIPConfig fields"] = (
        "ViT-B/16"
    )
    attn: Annotated[
        Attention,
        "last-layer attention: identity (MaskCLIP), csa (SCLIP), qq (ClearCLIP), naclip, kk, vanilla",
    ] = "identity"
    residual: Annotated[bool, "keep the last block's residual connection"] = True
    ffn: Annotated[bool, "keep the last block's MLP"] = True
    gaussian_std: Annotated[float, "NACLIP's neighbourhood Gaussian width (patches)"] = 5.0
    rn_dense_attnpool: Annotated[bool, "ResNet CLIP: run the attention pool densely"] = False
    templates: Annotated[str, "prompt template set (vocaseg.text.templates)"] = "maskclip85"
    pixel_norm: Annotated[
        Literal["clip", "imagenet"], "pixel statistics: the CLIP's own or ImageNet's"
    ] = "clip"
    short_side: int | None = 336
    max_long_side: int | None = 2048
    window: int | None = 224
    stride: int | None = 112
    logit_scale: Annotated[float, "multiplies cosines before the softmax over queries"] = 40.0
    ks_thresh: Annotated[float, "key smoothing threshold (MaskCLIP §3.2); 0: off"] = 0.0
    pd_thresh: Annotated[float, "prompt denoising threshold (MaskCLIP §3.2); 0: off"] = 0.0
    ks_key_norm: Annotated[
        Literal["channel", "token"],
        "key smoothing normalises keys per channel (paper) or per token (reference code)",
    ] = "channel"


class MaskCLIP(SegmentationModel):
    """Frozen CLIP whose dense patch features are scored against text by cosine similarity."""

    frozen_modules = ("clip",)
    runtime_keys = (
        "attn", "residual", "ffn", "gaussian_std", "rn_dense_attnpool", "templates",
        "pixel_norm", "logit_scale", "ks_thresh", "pd_thresh", "ks_key_norm",
    )  # fmt: skip
    chunkable = True

    def __init__(self, config: MaskCLIPConfig, towers: Towers) -> None:
        super().__init__()
        self.config = config
        self.clip = towers.clip
        self._embedder: Any = None
        self._setup()

    def _setup(self) -> None:
        clip_cfg = self.clip.config
        if self.config.pixel_norm == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:  # the CLIP's own statistics (OpenAI's for OpenAI weights), on the 0-255 scale
            mean = tuple(255.0 * m for m in clip_cfg.mean)
            std = tuple(255.0 * s for s in clip_cfg.std)
        self.setup_inference(mean, std, clip_cfg.vision_patch_size if clip_cfg.is_vit else 32)

    def settings_changed(self, keys: set[str]) -> None:
        if "pixel_norm" in keys:
            self._setup()
        if "templates" in keys:
            self._embedder = None

    def encode_vocabulary(self, vocabulary: Vocabulary) -> Tensor:
        """Prompt-ensembled, L2-normalised text embeddings, one row per query name: [Q, D]."""
        if self._embedder is None:
            from vocaseg.text.embed import TextEmbedder

            self._embedder = TextEmbedder(self.clip, templates=self.config.templates)
        return self._embedder.embed_queries(vocabulary)

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        """Cosine scores [B, Q, h, w] (or, with key smoothing, query probabilities summing to 1)."""
        cfg = self.config
        smoothing = cfg.ks_thresh > 0
        feats, keys = dense_features(
            self.clip,
            images,
            attn=cfg.attn,
            residual=cfg.residual,
            ffn=cfg.ffn,
            gaussian_std=cfg.gaussian_std,
            rn_dense_attnpool=cfg.rn_dense_attnpool,
            return_keys=smoothing,
        )
        # Scoring in fp32 even under bf16/fp16 autocast: bf16 cosines would round before × scale.
        with torch.autocast(feats.device.type, enabled=False):
            text = torch.nn.functional.normalize(text.to(feats.dtype), dim=-1)  # fp32 or fp64
            scores = torch.einsum("bdhw,qd->bqhw", feats, text)
            scores = prompt_denoise(scores, cfg.pd_thresh)
            if smoothing:
                probs = key_smooth(scores, keys, cfg.ks_thresh, cfg.ks_key_norm)
                return probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
            return scores

    def dense_chunks(
        self, images: Tensor, text: Tensor, scored: Vocabulary
    ) -> Callable[[range], Tensor]:
        """Scores of every query at patch resolution, once; a run of classes reads its queries."""
        logits = self(images, text)  # [B, Q, h, w]
        first = [0]
        for names in scored.classes:
            first.append(first[-1] + len(names))  # first query of each class
        return lambda classes: logits[:, first[classes.start] : first[classes.stop]]

    def chunk_normaliser(self, stitched: Tensor, state: Tensor | None) -> Tensor | None:
        """The softmax's per-pixel running maximum and sum of exponentials [B, 2, H, W] over the
        queries seen so far (None with key smoothing: its scores are probabilities already)."""
        if self.config.ks_thresh > 0:
            return None
        logits = self.config.logit_scale * stitched
        peak = logits.amax(dim=1, keepdim=True)  # [B, 1, H, W]
        if state is not None:
            peak = torch.maximum(peak, state[:, :1])
        total = torch.exp(logits - peak).sum(dim=1, keepdim=True)
        if state is not None:
            total = total + state[:, 1:] * torch.exp(state[:, :1] - peak)
        return torch.cat([peak, total], dim=1)

    def class_scores(
        self,
        stitched: Tensor,
        scored: Vocabulary,
        background: BackgroundProtocol,
        state: Tensor | None = None,
    ) -> Tensor:
        """Stitched scores [B, Q, H, W] -> class scores [B, K, H, W]: softmax over the queries
        (over every chunk's, by ``state``), then the max over each class's synonyms (MaskCLIP §3,
        SCLIP)."""
        cfg = self.config
        if cfg.ks_thresh > 0:
            probs = stitched
        elif state is None:
            probs = torch.softmax(cfg.logit_scale * stitched, 1)
        else:
            probs = torch.exp(cfg.logit_scale * stitched - state[:, :1]) / state[:, 1:]
        return max_over_queries(probs, scored.query_to_class, len(scored))

    def class_order(
        self, stitched: Tensor, scored: Vocabulary, background: BackgroundProtocol
    ) -> Tensor:
        """The max over each class's synonyms of the stitched scores themselves: the softmax over
        the queries keeps each pixel's order, so no normaliser over every chunk is needed."""
        return max_over_queries(stitched, scored.query_to_class, len(scored))

    def loss(self, batch: dict[str, Any], outputs: Any) -> dict[str, Tensor]:
        raise UserError("maskclip is training-free (no loss); use 'vocaseg eval' or 'segment'")

    def forward_train(self, batch: dict[str, Any]) -> Any:
        raise UserError("maskclip is training-free (no loss); use 'vocaseg eval' or 'segment'")


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "maskclip": ("MaskCLIP (training-free), SCLIP's 8-benchmark protocol", {}),
    "maskclip-ref": (
        "MaskCLIP, the reference code's protocol (512 short side, whole image, ImageNet norm)",
        {
            "short_side": 512,
            "window": 0,
            "pixel_norm": "imagenet",
            "logit_scale": 100.0,
            "ks_key_norm": "token",
        },
    ),
    "sclip": (
        "SCLIP (correlative self-attention), training-free",
        {"attn": "csa", "templates": "imagenet80", "size_divisor": 1},
    ),
    "clearclip": (
        "ClearCLIP (q-q attention, no last residual/FFN), training-free",
        {
            "attn": "qq",
            "residual": False,
            "ffn": False,
            "templates": "imagenet80",
            "short_side": 448,
            "window": 448,
            "stride": 224,
            "logit_scale": 50.0,
        },
    ),
    "naclip": (
        "NACLIP (neighbourhood attention, no last residual/FFN), training-free",
        {
            "attn": "naclip",
            "residual": False,
            "ffn": False,
            "templates": "imagenet80",
            "size_divisor": 1,
        },
    ),
}
TINY = {"clip": TINY_VIT, "short_side": 64, "window": 32, "stride": 16, "templates": "single"}


def build_maskclip(config: MaskCLIPConfig, towers: Towers) -> MaskCLIP:
    return MaskCLIP(config, towers)


for _name, (_description, _preset) in PRESETS.items():
    register_model(
        _name,
        MaskCLIPConfig,
        _description,
        towers={"text": "inference", "visual": "inference"},
        tiny=TINY,
        **_preset,
    )(build_maskclip)
