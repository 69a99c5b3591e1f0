"""TagCLIP (Li et al., arXiv 2304.07547 / TPAMI 2024) and ZegCLIP (Zhou et al., CVPR 2023) for
zero-shot semantic segmentation with seen/unseen discrimination (docs/methods/tagclip.md).

A frozen CLIP ViT, adapted by deep visual prompts (:mod:`vocaseg.models.layers.vpt`), gives a global
embedding g and patch embeddings P. Each class text embedding t (and TagCLIP's learnable trusty token
τ) becomes a query through the relationship descriptor [g⊙t; t]; TagCLIP's trusty learner lets the
queries attend to each other; three attention-to-mask blocks (:mod:`vocaseg.models.layers.atm`)
turn the queries into one mask-logit map per query. Scores are independent sigmoids; at inference
seen scores are calibrated (−0.1) and weighted by the trusty map.

With the trusty learner on, every query depends on the whole vocabulary: a class scores
differently in different vocabularies. ZegCLIP is the ``zegclip`` preset (no τ, no learner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.constants import IMAGENET_MEAN, IMAGENET_STD
from vocaseg.errors import ConfigError
from vocaseg.losses import dice_loss, num_masks, sigmoid_focal_loss
from vocaseg.models.base import Batch, InferenceConfig, SegmentationModel, TrainSpec
from vocaseg.models.layers.atm import ATMDecoder
from vocaseg.models.layers.vpt import VisualPrompts, bilinear_pos_embed
from vocaseg.models.registry import register_model
from vocaseg.text.vocab import Vocabulary

if TYPE_CHECKING:
    from collections.abc import Callable

    from vocaseg.background import BackgroundProtocol
    from vocaseg.models.towers import Towers


#: Queries the attention-to-mask blocks take at once when scoring many classes (memory bound).
HEAD_QUERIES = 1024


@dataclass
class TagCLIPConfig(InferenceConfig):
    """TagCLIP / ZegCLIP settings (TagCLIP §3-§4, ZegCLIP §3; the released configs' values)."""

    clip: Annotated[Any, "CLIP ViT: a known name (ViT-B/16) or CLIPConfig fields"] = "ViT-B/16"
    setting: Annotated[
        Literal["inductive", "transductive", "supervised"], "zero-shot setting it is trained in"
    ] = "inductive"
    num_prompts: Annotated[int, "deep visual prompts per layer: 10 VOC, 100 COCO, 35 Context"] = 10
    pos_grid: Annotated[int, "positional table resized to this grid at load (512 / 16)"] = 32
    cls_double_embedding: Annotated[bool, "add the class embedding to the CLS token twice"] = True
    trusty_token: Annotated[bool, "TagCLIP's trusty token (off: ZegCLIP)"] = True
    trusty_learner: Annotated[bool, "self-attention over all queries (off: ZegCLIP)"] = True
    head_depth: Annotated[int, "attention-to-mask blocks"] = 3
    head_heads: Annotated[int, "attention heads of the head"] = 8
    head_ffn: Annotated[int, "FFN width of the head"] = 2048
    dropout: Annotated[float, "dropout in prompts and head"] = 0.1
    head_init: Annotated[
        Literal["xavier", "torch_default_cloned"], "head initialisation (TagCLIP / ZegCLIP)"
    ] = "xavier"
    mask_weight: Annotated[float, "focal loss weight"] = 20.0
    dice_weight: Annotated[float, "dice loss weight"] = 1.0
    trusty_weight: Annotated[float, "trusty loss weight"] = 10.0
    focal_alpha: Annotated[float, "focal loss alpha"] = 0.25
    focal_gamma: Annotated[float, "focal loss gamma"] = 2.0
    trusty_target: Annotated[
        Literal["unseen", "seen"], "what the trusty map marks (released code: unseen)"
    ] = "unseen"
    trusty_weighting: Annotated[
        Literal["both", "seen", "unseen", "none"], "which scores the trusty map weights"
    ] = "both"
    seen_calibration: Annotated[float, "subtracted from seen-class scores (inductive)"] = 0.1
    templates: Annotated[str, "prompt template set (vocaseg.text.templates)"] = "voc_single"
    grad_checkpointing: Annotated[
        bool, "recompute frozen blocks in backward: less memory, slower"
    ] = False
    short_side: int | None = 512
    max_long_side: int | None = None
    window: int | None = 512
    stride: int | None = 426

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.clip, dict):
            from vocaseg.clip.model import CLIPConfig

            self.clip = CLIPConfig.from_dict(self.clip)


class RelationshipDescriptor(nn.Module):
    """ZegCLIP's query builder: X = proj([g⊙t ; t]) for every image g and text row t."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, g: Tensor, text: Tensor) -> Tensor:
        """g [B, D], text [Q, D] -> queries [B, Q, D]."""
        g = g[:, None, :]  # [B, 1, D]
        text = text[None].expand(g.shape[0], -1, -1)  # [B, Q, D]
        return self.proj(torch.cat([g * text, text], dim=-1))


class TrustyLearner(nn.Module):
    """One post-norm self-attention block over all queries: LN(X + Dropout(MHA(X, X, X)))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # nn.MultiheadAttention's own math, through scaled_dot_product_attention even in
        # inference: its fused inference path holds [B, heads, Q, Q] weights (3 GB at Q = 10,000).
        attn = self.attn
        batch, length, dim = x.shape
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [B, Q, 3·D]
        # [B, Q, 3·D] -> 3 × [B, heads, Q, D / heads]
        q, k, v = qkv.view(batch, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        dropout = attn.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = attn.out_proj(out.transpose(1, 2).reshape(batch, length, dim))  # [B, Q, D]
        return self.norm(x + self.drop(out))


class TagCLIPHead(ATMDecoder):
    """Descriptor, optional trusty token τ and trusty learner, then the ATM blocks (``blocks``)."""

    def __init__(self, dim: int, cfg: TagCLIPConfig) -> None:
        super().__init__(cfg.head_depth, dim, cfg.head_heads, cfg.head_ffn, cfg.dropout)
        self.descriptor = RelationshipDescriptor(dim)
        self.trusty_token = nn.Parameter(torch.zeros(1, dim)) if cfg.trusty_token else None
        self.trusty_learner = (
            TrustyLearner(dim, cfg.head_heads, cfg.dropout) if cfg.trusty_learner else None
        )
        self._init(cfg.head_init)

    def _init(self, mode: str) -> None:
        if mode == "torch_default_cloned":
            # ZegCLIP: PyTorch defaults, every block a copy of the first.
            for block in self.blocks[1:]:
                block.load_state_dict(self.blocks[0].state_dict())
            if self.trusty_token is not None:
                nn.init.xavier_uniform_(self.trusty_token)
            return
        # TagCLIP as run: xavier_uniform on every >= 2-d tensor; zero descriptor and MHA biases.
        for param in self.parameters():
            if param.dim() >= 2:
                nn.init.xavier_uniform_(param)
        nn.init.zeros_(self.descriptor.proj.bias)
        if self.trusty_learner is not None:
            nn.init.zeros_(self.trusty_learner.attn.in_proj_bias)
            nn.init.zeros_(self.trusty_learner.attn.out_proj.bias)

    def append_trusty(self, text: Tensor) -> Tensor:
        """Text rows [C, D] -> [C + 1, D] with τ last (unchanged when there is no τ)."""
        if self.trusty_token is None:
            return text
        return torch.cat([text, self.trusty_token.to(text.dtype)], dim=0)

    def forward(self, g: Tensor, patches: Tensor, text: Tensor) -> Tensor:  # type: ignore[override]
        """g [B, D], patches [B, D, h, w], text [Q, D] -> mask logits [B, Q, h, w]."""
        return self.masks(self.queries(g, text), patches)

    def queries(self, g: Tensor, text: Tensor) -> Tensor:
        """g [B, D], text [Q, D] -> queries [B, Q, D] (the trusty learner couples them all)."""
        query = self.descriptor(g, text.to(g.dtype))  # [B, Q, D]
        if self.trusty_learner is not None:
            query = self.trusty_learner(query)
        return query

    def masks(self, query: Tensor, patches: Tensor) -> Tensor:
        """queries [B, Q, D], patches [B, D, h, w] -> mask logits [B, Q, h, w] (each query alone)."""
        batch, _, h, w = patches.shape
        memory = patches.flatten(2).transpose(1, 2)  # [B, h·w, D]
        masks = super().forward(query, memory)  # [B, Q, h·w]
        return masks.view(batch, -1, h, w)


class TagCLIP(SegmentationModel):
    """TagCLIP / ZegCLIP on a frozen CLIP ViT; learnable: ``vpt`` (prompts) and ``head``."""

    frozen_modules = ("clip",)
    runtime_keys = ("templates", "trusty_weighting", "seen_calibration")
    chunkable = True

    def __init__(self, cfg: TagCLIPConfig, towers: Towers) -> None:
        super().__init__()
        clip = towers.clip
        if not getattr(clip.config, "is_vit", False):
            raise ConfigError(
                "TagCLIP needs a CLIP ViT, and these CLIP weights are a ResNet; use ViT weights "
                "such as ViT-B/16"
            )
        self.config = cfg
        self.clip = clip
        visual = clip.visual
        # 14x14 -> pos_grid (32x32) once, bilinear: the table official weights were trained with.
        with torch.no_grad():
            table = bilinear_pos_embed(visual.positional_embedding, (cfg.pos_grid, cfg.pos_grid))
        visual.positional_embedding = nn.Parameter(table, requires_grad=False)
        visual.grid_size = cfg.pos_grid
        width = visual.conv1.out_channels
        self.vpt = VisualPrompts(
            width,
            len(visual.transformer.resblocks),
            cfg.num_prompts,
            patch_size=visual.conv1.kernel_size[0],
            dropout=cfg.dropout,
            cls_double_embedding=cfg.cls_double_embedding,
            grad_checkpointing=cfg.grad_checkpointing,
        )
        self.head = TagCLIPHead(clip.config.embed_dim, cfg)
        self.setup_inference(IMAGENET_MEAN, IMAGENET_STD, visual.conv1.kernel_size[0])
        self.spec: TrainSpec | None = None
        self._train_text: Tensor | None = None
        self._embedder = None  # TextEmbedder, built on first use

    def settings_changed(self, keys: set[str]) -> None:
        if "templates" in keys:
            self._embedder = None

    # ----- inference ---------------------------------------------------------------------------

    def encode_vocabulary(self, vocabulary: Vocabulary) -> Tensor:
        """Normalised class embeddings [K, D]; τ appended as row K when the vocabulary has a seen
        set and the model a trusty token (without a seen set τ, calibration and weighting are off)."""
        from vocaseg.text.embed import TextEmbedder

        if self._embedder is None:
            self._embedder = TextEmbedder(self.clip, templates=self.config.templates)
        text = self._embedder.embed(vocabulary).to(self.device)
        if vocabulary.seen is not None:
            text = self.head.append_trusty(text)
        return text

    def forward(self, images: Tensor, text: Tensor) -> Tensor:
        """Normalised ``images`` [B, 3, H, W] and query rows ``text`` [Q, D] -> [B, Q, H/16, W/16]."""
        g, patches = self.vpt.encode(self.clip.visual, images)
        return self.head(g, patches, text)

    def dense_chunks(
        self, images: Tensor, text: Tensor, scored: Vocabulary
    ) -> Callable[[range], Tensor]:
        """Mask logits of every query at patch resolution, the ATM blocks run on
        ``HEAD_QUERIES`` queries at a time; a run of classes reads its rows and τ's."""
        g, patches = self.vpt.encode(self.clip.visual, images)
        query = self.head.queries(g, text)  # [B, Q, D]
        logits = torch.cat(
            [
                self.head.masks(query[:, start : start + HEAD_QUERIES], patches)
                for start in range(0, query.shape[1], HEAD_QUERIES)
            ],
            dim=1,
        )  # [B, Q, h, w]
        trusty = logits[:, len(scored) :]  # τ's map when the text has it: [B, 0 or 1, h, w]
        return lambda classes: torch.cat([logits[:, classes.start : classes.stop], trusty], 1)

    def window_output(
        self, logits: Tensor, vocabulary: Vocabulary, background: BackgroundProtocol
    ) -> Tensor:
        """Sigmoid scores of one window [B, Q', H, W] -> [B, K, H, W] (TagCLIP §3.4: seen scores
        calibrated, all weighted by the trusty map)."""
        cfg, k = self.config, len(vocabulary)
        probs = logits.sigmoid()
        scores = probs[:, :k]
        if vocabulary.seen is None:
            return scores
        seen = torch.zeros(k, dtype=torch.bool, device=logits.device)
        seen[list(vocabulary.seen)] = True
        seen = seen.view(1, k, 1, 1)
        if cfg.setting == "inductive":
            scores = scores - cfg.seen_calibration * seen
        if probs.shape[1] == k + 1 and cfg.trusty_weighting != "none":
            trusty = probs[:, k:]  # [B, 1, H, W]
            w = trusty if cfg.trusty_target == "unseen" else 1 - trusty
            if cfg.trusty_weighting in ("both", "seen"):
                scores = torch.where(seen, scores * (1 - w), scores)
            if cfg.trusty_weighting in ("both", "unseen"):
                scores = torch.where(seen, scores, scores * w)
        return scores

    # ----- training ----------------------------------------------------------------------------

    def _reads_unseen_locations(self) -> bool:
        cfg = self.config
        return cfg.setting == "inductive" and cfg.trusty_token and cfg.trusty_target == "unseen"

    def train_needs(self) -> frozenset[str]:
        """Inductive training with the released trusty target reads the unmasked ``label_full``."""
        return frozenset({"label_full"}) if self._reads_unseen_locations() else frozenset()

    def result_notes(self) -> list[str]:
        """docs/methods/tagclip.md §3: inductive runs with trusty_target "unseen" saw where unseen
        pixels are."""
        if self._reads_unseen_locations():
            return ["uses unseen-pixel locations (trusty_target='unseen', released-code variant)"]
        return []

    def prepare_training(self, spec: TrainSpec) -> None:
        """Encode the training queries: the seen names only (in seen order) when inductive, all
        classes otherwise. Unseen ids are kept solely to build the trusty target and pseudo-labels."""
        cfg, vocabulary = self.config, spec.vocabulary
        if vocabulary is None:
            raise ConfigError(f"{self.name} trains on labelled data; use the 'semantic' pipeline")
        if spec.setting != cfg.setting:
            raise ConfigError(
                f"model.setting is {cfg.setting!r} but data.zero_shot.setting is "
                f"{spec.setting!r}; set both to the same value"
            )
        if spec.zero_shot is not None and vocabulary.seen is None:
            raise ConfigError(f"{spec.setting} training needs a seen/unseen split (data.zero_shot)")
        if spec.zero_shot == "transductive" and spec.init is not None:
            self._check_init_split(vocabulary, spec.init)
        self.spec = spec
        queried = Vocabulary(vocabulary.classes)
        if spec.zero_shot == "inductive":
            queried = Vocabulary(tuple(vocabulary.classes[i] for i in vocabulary.seen))
        with torch.no_grad():
            self._train_text = self.encode_vocabulary(queried)

    def _check_init_split(self, vocabulary: Vocabulary, init: dict[str, Any]) -> None:
        """TagCLIP/ZegCLIP: transductive training starts from an inductive run with the same
        split (a model folder from another code base records none and is not checked)."""
        split = init.get("split")
        if split is None:
            return
        unseen = [n for i, n in enumerate(vocabulary.class_names) if i not in set(vocabulary.seen)]
        if split.get("setting") != "inductive" or list(split.get("unseen", [])) != unseen:
            raise ConfigError(
                f"run.init {init.get('source')}: was trained {split.get('setting')!r} with "
                f"unseen {split.get('unseen')}, but transductive training must start from an "
                f"inductive checkpoint with this run's unseen classes {unseen}"
            )

    @property
    def _ignore_index(self) -> int:
        return self.spec.ignore_index if self.spec is not None else 255

    def count_targets(self, batch: Batch) -> float:
        """Labelled (image, class) pairs of this micro-batch; the trainer turns the global sum into
        ``batch["num_targets"]`` (N_m). Transductive pairs are counted before pseudo-labelling."""
        label = batch["label"]
        return float(sum(int((img.unique() != self._ignore_index).sum()) for img in label))

    def _split_ids(self) -> tuple[list[int], list[int]]:
        vocab = self.spec.vocabulary
        seen = list(vocab.seen) if vocab.seen is not None else list(range(len(vocab)))
        return seen, [i for i in range(len(vocab)) if i not in set(seen)]

    def forward_train(self, batch: Batch) -> dict[str, Tensor]:
        """Mask logits at label size [B, C', H, W] and the (pseudo-)labels the losses use.

        ``batch``: ``image`` [B, 3, H, W] (normalised), ``label`` [B, H, W] (inductive: seen
        positions, 255 elsewhere; otherwise dataset ids), ``label_full`` [B, H, W] (dataset ids;
        inductive with ``trusty_target="unseen"`` only).
        """
        if self._train_text is None:
            raise ConfigError("call prepare_training(spec) before training TagCLIP")
        text = self.head.append_trusty(self._train_text.to(self.device))
        label = batch["label"].to(self.device).long()
        logits = self(batch["image"].to(self.device), text)
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        outputs = {"logits": logits, "label": label}
        if self.config.setting == "transductive":
            outputs["label"] = self.pseudo_label(logits.detach(), label)
        return outputs

    def pseudo_label(self, logits: Tensor, label: Tensor) -> Tensor:
        """Relabel unseen-GT pixels of ``label`` [B, H, W] as the argmax over the unseen classes of
        σ(M_R) (no threshold); seen labels and ignored pixels stay (ZegCLIP §3.5, transductive)."""
        _, unseen = self._split_ids()
        if not unseen:
            return label
        unseen_ids = torch.tensor(unseen, device=label.device)
        best = unseen_ids[logits[:, unseen].argmax(dim=1)]  # [B, H, W] dataset ids
        return torch.where(torch.isin(label, unseen_ids), best, label)

    def _trusty_target(self, batch: Batch, device: torch.device) -> Tensor:
        """G_A [B, 1, H, W] from the batch's unmodified labels: 1 at unseen-class pixels
        (``"unseen"``, the released code) or at seen-class pixels (``"seen"``, the paper)."""
        seen, unseen = self._split_ids()
        inductive = self.config.setting == "inductive"
        label = batch["label"].to(device).long()
        if self.config.trusty_target == "seen":
            if inductive:  # labels hold seen positions, ignore elsewhere
                return (label != self._ignore_index)[:, None].float()
            return torch.isin(label, torch.tensor(seen, device=device))[:, None].float()
        full = batch.get("label_full") if inductive else label
        if full is None:
            raise ConfigError(
                "trusty_target 'unseen' in inductive training needs batch['label_full'] "
                "(unmasked labels); use the 'semantic' pipeline or trusty_target: seen"
            )
        unseen_ids = torch.tensor(unseen, dtype=torch.long, device=device)
        return torch.isin(full.to(device).long(), unseen_ids)[:, None].float()

    def loss(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Focal + dice on M_R (ignored pixels are negatives for every class), trusty loss on M_A."""
        cfg = self.config
        logits, label = outputs["logits"].float(), outputs["label"]
        classes = self._train_text.shape[0]
        class_ids = torch.arange(classes, device=label.device)  # seen positions or dataset ids
        targets = (label[:, None] == class_ids.view(1, -1, 1, 1)).float()  # [B, C, H, W]
        present = targets.flatten(2).any(-1)  # [B, C]
        n_m = batch.get("num_targets")
        if n_m is None:
            n_m = num_masks(present)
        masks = logits[:, :classes]
        focal = sigmoid_focal_loss(masks, targets, n_m, cfg.focal_alpha, cfg.focal_gamma)
        dice = dice_loss(masks, targets, n_m, present)
        losses = {"loss_focal": focal, "loss_dice": dice}
        total = cfg.mask_weight * focal + cfg.dice_weight * dice
        if self.head.trusty_token is not None:
            trusty_logits = logits[:, classes:]
            target = self._trusty_target(batch, label.device)
            if cfg.trusty_target == "unseen":
                trusty = sigmoid_focal_loss(
                    trusty_logits, target, n_m, cfg.focal_alpha, cfg.focal_gamma
                )
            else:
                trusty = dice_loss(trusty_logits, target, n_m)
            losses["loss_trusty"] = trusty
            total = total + cfg.trusty_weight * trusty
        return {"loss": total, **losses}


TINY = {
    "clip": {
        "embed_dim": 32, "image_size": 64, "vision_layers": 2, "vision_width": 64,
        "vision_patch_size": 8, "vision_heads": 4, "text_width": 32, "text_layers": 1,
        "text_heads": 2,
    },
    "pos_grid": 8, "num_prompts": 4, "head_heads": 2, "head_ffn": 64, "dropout": 0.0,
    "short_side": 64, "window": 64, "stride": 48,
}  # fmt: skip
TINY_TRAIN = {
    "model": {"setting": "supervised", "trusty_token": False},
    "data": {"transform": {"crop_size": 64, "scale": [64, 64], "ratio_range": [0.9, 1.1]}},
}


def _build(cfg: TagCLIPConfig, towers: Towers) -> TagCLIP:
    return TagCLIP(cfg, towers)


_TOWERS = {"text": "inference", "visual": "inference"}
register_model(
    "tagclip",
    TagCLIPConfig,
    "TagCLIP: zero-shot segmentation with a trusty token (frozen CLIP ViT + VPT + ATM head)",
    towers=_TOWERS,
    trained=True,
    tiny=TINY,
    tiny_train=TINY_TRAIN,
)(_build)
register_model(
    "zegclip",
    TagCLIPConfig,
    "ZegCLIP: frozen CLIP ViT + deep VPT + relationship descriptor + ATM head",
    towers=_TOWERS,
    trained=True,
    tiny=TINY,
    tiny_train=TINY_TRAIN,
    trusty_token=False,
    trusty_learner=False,
    mask_weight=100.0,
    head_init="torch_default_cloned",
    trusty_weighting="none",
)(_build)
