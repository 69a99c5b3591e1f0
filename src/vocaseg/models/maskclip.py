"""MaskCLIP and its training-free relatives (SCLIP, ClearCLIP, NACLIP) as one configurable model.

Spec: ``specs/maskclip.md``. Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022;
Wang et al., SCLIP, ECCV 2024; Lan et al., ClearCLIP, ECCV 2024; Hajimiri et al., NACLIP, WACV 2025.
CLIP stays frozen; ``vocaseg.clip.dense`` changes only its last visual layer. ``forward`` scores
patches against prompt-ensembled text embeddings by cosine; ``finalize`` applies softmax over the
queries, the max over each class's synonyms and the optional background threshold (§5).

Registered presets: ``maskclip`` (SCLIP's 8-benchmark protocol), ``maskclip-ref`` (the reference
code's protocol), ``sclip``, ``clearclip``, ``naclip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from vocaseg.clip.dense import Attention, dense_features, key_smooth, prompt_denoise
from vocaseg.config import to_dict
from vocaseg.errors import UserError
from vocaseg.inference.background import drop_small_classes, max_over_queries
from vocaseg.models.base import IMAGENET_MEAN, IMAGENET_STD, Preprocess, SegmentationModel
from vocaseg.models.registry import register_model

if TYPE_CHECKING:
    from vocaseg.text.vocab import Vocabulary

#: SCLIP/NACLIP's class-0 names for VOC-21 and COCO-Object (spec §5): stuff words that stand for
#: "background" under ``prob_thd``.
BACKGROUND_STUFF = (
    "sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk",
    "bed", "building", "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf",
    "curtain", "stair", "floor", "hill", "rail", "fence",
)  # fmt: skip


@dataclass
class MaskCLIPConfig:
    """Settings of the training-free dense CLIP family (spec §2-§7).

    Last layer: ``attn`` (identity = MaskCLIP, csa = SCLIP, qq = ClearCLIP, naclip, kk, vanilla),
    ``residual`` and ``ffn`` switch the last block's residual and MLP. Scoring: ``logit_scale``
    multiplies cosines before the softmax over queries; ``prob_thd`` > 0 gives class 0 (the first
    class of the vocabulary, e.g. "background") every pixel whose best probability is below it;
    ``area_thd`` > 0 drops classes covering at most that share of the foreground. ``ks_thresh`` and
    ``pd_thresh`` > 0 turn on key smoothing and prompt denoising. Input: resize to ``short_side``
    (long side at most ``max_long_side``), ``slide_crop``/``slide_stride`` windows (0 = whole
    image), ``pad_to_patch`` pads to the patch size (off: floor and stretch, as SCLIP/NACLIP).
    """

    clip: str = "ViT-B/16"
    attn: Attention = "identity"
    residual: bool = True
    ffn: bool = True
    gaussian_std: float = 5.0
    rn_dense_attnpool: bool = False
    templates: str = "maskclip85"
    pixel_norm: Literal["clip", "imagenet"] = "clip"
    short_side: int = 336
    max_long_side: int = 2048
    slide_crop: int = 224
    slide_stride: int = 112
    pad_to_patch: bool = True
    logit_scale: float = 40.0
    prob_thd: float = 0.0
    area_thd: float = 0.0
    ks_thresh: float = 0.0
    pd_thresh: float = 0.0
    ks_key_norm: Literal["channel", "token"] = "channel"


class MaskCLIP(SegmentationModel):
    """Frozen CLIP whose dense patch features are scored against text by cosine similarity."""

    def __init__(self, config: MaskCLIPConfig, clip: Any) -> None:
        super().__init__()
        self.config = config
        self.clip = clip.eval().requires_grad_(False)
        self._embedder: Any = None
        is_vit = clip.config.is_vit
        if config.pixel_norm == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:  # the CLIP's own statistics (OpenAI's for OpenAI weights), on the 0-255 scale
            mean = tuple(255.0 * m for m in clip.config.mean)
            std = tuple(255.0 * s for s in clip.config.std)
        stride = clip.config.vision_patch_size if is_vit else 32
        self.preprocess = Preprocess(
            mean=mean,
            std=std,
            short_side=config.short_side or None,
            max_long_side=config.max_long_side or None,
            window=config.slide_crop or None,
            stride=(config.slide_stride or config.slide_crop) if config.slide_crop else None,
            size_divisor=stride if config.pad_to_patch else 1,
        )

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
        # Scoring in fp32 even when the encoder ran under bf16/fp16 autocast (spec §7).
        with torch.autocast(feats.device.type, enabled=False):
            text = torch.nn.functional.normalize(text.to(feats.dtype), dim=-1)  # fp32 or fp64
            scores = torch.einsum("bdhw,qd->bqhw", feats, text)
            scores = prompt_denoise(scores, cfg.pd_thresh)
            if smoothing:
                probs = key_smooth(scores, keys, cfg.ks_thresh, cfg.ks_key_norm)
                return probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
            return scores

    def finalize(self, stitched: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Stitched scores [B, Q, H, W] -> class probabilities [B, K, H, W] (argmax = label)."""
        cfg = self.config
        probs = stitched if cfg.ks_thresh > 0 else torch.softmax(cfg.logit_scale * stitched, 1)
        probs = max_over_queries(probs, vocabulary.query_to_class, len(vocabulary))
        if cfg.area_thd > 0:
            probs = drop_small_classes(probs, cfg.area_thd)
        if cfg.prob_thd > 0:
            probs = threshold_background(probs, cfg.prob_thd)
        return probs

    def loss(self, batch: dict[str, Any], outputs: Any) -> dict[str, Tensor]:
        raise UserError("maskclip is training-free (no loss); use 'vocaseg eval' or 'segment'")

    def forward_train(self, batch: dict[str, Any]) -> Any:
        raise UserError("maskclip is training-free (no loss); use 'vocaseg eval' or 'segment'")

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)


def threshold_background(probs: Tensor, prob_thd: float) -> Tensor:
    """Give class 0 every pixel whose best probability is below ``prob_thd`` (its score is set to
    1, above any probability)."""
    low = probs.amax(dim=1) < prob_thd  # [B, H, W]
    probs = probs.clone()
    probs[:, 0] = torch.where(low, torch.ones_like(probs[:, 0]), probs[:, 0])
    return probs


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "maskclip": ("MaskCLIP (training-free), SCLIP's 8-benchmark protocol", {}),
    "maskclip-ref": (
        "MaskCLIP, the reference code's protocol (512 short side, whole image, ImageNet norm)",
        {
            "short_side": 512,
            "slide_crop": 0,
            "slide_stride": 0,
            "pixel_norm": "imagenet",
            "logit_scale": 100.0,
        },
    ),
    "sclip": (
        "SCLIP (correlative self-attention), training-free",
        {"attn": "csa", "templates": "imagenet80", "pad_to_patch": False},
    ),
    "clearclip": (
        "ClearCLIP (q-q attention, no last residual/FFN), training-free",
        {
            "attn": "qq",
            "residual": False,
            "ffn": False,
            "templates": "imagenet80",
            "short_side": 448,
            "slide_crop": 448,
            "slide_stride": 224,
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
            "pad_to_patch": False,
        },
    ),
}


def build_maskclip(config: MaskCLIPConfig, clip: Any) -> MaskCLIP:
    return MaskCLIP(config, clip)


for _name, (_description, _preset) in PRESETS.items():
    register_model(_name, MaskCLIPConfig, _description, **_preset)(build_maskclip)
