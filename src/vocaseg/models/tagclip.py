"""TagCLIP (Li et al., arXiv 2304.07547 / TPAMI 2024) and ZegCLIP (Zhou et al., CVPR 2023) for
zero-shot semantic segmentation with seen/unseen discrimination. Spec: specs/tagclip.md.

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
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.config import to_dict
from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.losses import dice_loss, num_masks, sigmoid_focal_loss
from vocaseg.models.base import IMAGENET_MEAN, IMAGENET_STD, Preprocess, SegmentationModel
from vocaseg.models.layers.atm import ATMDecoder
from vocaseg.models.layers.vpt import VisualPrompts, bilinear_pos_embed
from vocaseg.models.registry import register_model
from vocaseg.text.vocab import Vocabulary

IGNORE_INDEX = 255


@dataclass
class TagCLIPConfig:
    """TagCLIP / ZegCLIP settings (specs/tagclip.md §2.5 presets, §3 losses, §4 inference)."""

    clip: Any = "ViT-B/16"  # a known CLIP name, or CLIPConfig fields (tiny test models)
    setting: Literal["inductive", "transductive", "supervised"] = "inductive"
    num_prompts: int = 10  # N: 10 VOC, 100 COCO, 35 Context
    pos_grid: int = 32  # positional table resized to this grid at load (512 / 16)
    cls_double_embedding: bool = True
    trusty_token: bool = True
    trusty_learner: bool = True
    head_depth: int = 3
    head_heads: int = 8
    head_ffn: int = 2048
    dropout: float = 0.1
    head_init: Literal["xavier", "torch_default_cloned"] = "xavier"
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    trusty_weight: float = 10.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    trusty_target: Literal["unseen", "seen"] = "unseen"
    trusty_weighting: Literal["both", "seen", "unseen", "none"] = "both"
    seen_calibration: float = 0.1
    templates: str = "voc_single"
    crop_size: int = 512
    slide_stride: int = 426
    init_from: str | None = None  # model folder to warm-start from (weights only)
    grad_checkpointing: bool = False  # recompute frozen blocks in backward: less memory, slower

    def __post_init__(self) -> None:
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
        out, _ = self.attn(x, x, x, need_weights=False)
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
        batch, _, h, w = patches.shape
        query = self.descriptor(g, text.to(g.dtype))  # [B, Q, D]
        if self.trusty_learner is not None:
            query = self.trusty_learner(query)
        memory = patches.flatten(2).transpose(1, 2)  # [B, h·w, D]
        masks = super().forward(query, memory)  # [B, Q, h·w]
        return masks.view(batch, -1, h, w)


class TagCLIP(SegmentationModel):
    """TagCLIP / ZegCLIP on a frozen CLIP ViT; learnable: ``vpt`` (prompts) and ``head``."""

    def __init__(self, cfg: TagCLIPConfig, clip: nn.Module) -> None:
        super().__init__()
        if not getattr(clip.config, "is_vit", False):
            raise ConfigError(
                f"TagCLIP needs a ViT CLIP, got {cfg.clip!r}; use e.g. clip: ViT-B/16"
            )
        self.config = cfg
        self.clip = clip.requires_grad_(False)
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
        self.preprocess = Preprocess(
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            short_side=cfg.crop_size,
            max_long_side=4 * cfg.crop_size,
            window=cfg.crop_size,
            stride=cfg.slide_stride,
            size_divisor=visual.conv1.kernel_size[0],
        )
        self.train_vocabulary: Vocabulary | None = None
        self.init_split: dict[str, Any] | None = None  # split of the init_from training checkpoint
        self._train_text: Tensor | None = None
        self._embedder = None  # TextEmbedder, built on first use

    def train(self, mode: bool = True) -> TagCLIP:
        super().train(mode)
        self.clip.eval()  # frozen: no dropout or batch statistics
        return self

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

    def window_output(self, logits: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Sigmoid scores of one window [B, Q', H, W] -> [B, K, H, W] (specs/tagclip.md §4)."""
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
        """Spec §3: inductive runs with trusty_target "unseen" saw where unseen pixels are."""
        if self._reads_unseen_locations():
            return ["uses unseen-pixel locations (trusty_target='unseen', released-code variant)"]
        return []

    def prepare_training(self, vocabulary: Vocabulary | None, setting: str) -> None:
        """Encode the training queries: the seen names only (in seen order) when inductive, all
        classes otherwise. Unseen ids are kept solely to build the trusty target and pseudo-labels."""
        cfg = self.config
        if vocabulary is None:
            raise ConfigError(f"{self.name} trains on labelled data; use the 'semantic' pipeline")
        if setting != cfg.setting:
            raise ConfigError(
                f"model.setting is {cfg.setting!r} but data.zero_shot.setting is {setting!r}; "
                "set both to the same value"
            )
        if setting != "supervised" and vocabulary.seen is None:
            raise ConfigError(f"{setting} training needs a seen/unseen split (data.zero_shot)")
        if setting == "transductive" and self.init_split is not None:
            self._check_init_split(vocabulary)
        self.train_vocabulary = vocabulary
        queried = Vocabulary(vocabulary.classes)
        if setting == "inductive":
            queried = Vocabulary(tuple(vocabulary.classes[i] for i in vocabulary.seen))
        with torch.no_grad():
            self._train_text = self.encode_vocabulary(queried)

    def _check_init_split(self, vocabulary: Vocabulary) -> None:
        """Spec §5/§9: transductive training starts from an inductive run with the same split."""
        split = self.init_split or {}
        unseen = [n for i, n in enumerate(vocabulary.class_names) if i not in set(vocabulary.seen)]
        if split.get("setting") != "inductive" or list(split.get("unseen", [])) != unseen:
            raise ConfigError(
                f"init_from {self.config.init_from}: was trained {split.get('setting')!r} with "
                f"unseen {split.get('unseen')}, but transductive training must start from an "
                f"inductive checkpoint with this run's unseen classes {unseen}"
            )

    def count_targets(self, batch: dict[str, Any]) -> float:
        """Labelled (image, class) pairs of this micro-batch; the trainer turns the global sum into
        ``batch["num_targets"]`` (N_m). Transductive pairs are counted before pseudo-labelling."""
        label = batch["label"]
        return float(sum(int((img.unique() != IGNORE_INDEX).sum()) for img in label))

    def _split_ids(self) -> tuple[list[int], list[int]]:
        vocab = self.train_vocabulary
        seen = list(vocab.seen) if vocab.seen is not None else list(range(len(vocab)))
        return seen, [i for i in range(len(vocab)) if i not in set(seen)]

    def forward_train(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Mask logits at label size [B, C', H, W] and the (pseudo-)labels the losses use.

        ``batch``: ``image`` [B, 3, H, W] (normalised), ``label`` [B, H, W] (inductive: seen
        positions, 255 elsewhere; otherwise dataset ids), ``label_full`` [B, H, W] (dataset ids;
        inductive with ``trusty_target="unseen"`` only).
        """
        if self._train_text is None:
            raise ConfigError("call prepare_training(vocabulary, setting) before training TagCLIP")
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
        σ(M_R) (no threshold); seen labels and 255 stay (ZegCLIP transductive, spec §5)."""
        _, unseen = self._split_ids()
        if not unseen:
            return label
        unseen_ids = torch.tensor(unseen, device=label.device)
        best = unseen_ids[logits[:, unseen].argmax(dim=1)]  # [B, H, W] dataset ids
        return torch.where(torch.isin(label, unseen_ids), best, label)

    def _trusty_target(self, batch: dict[str, Any], device: torch.device) -> Tensor:
        """G_A [B, 1, H, W] from the batch's unmodified labels: 1 at unseen-class pixels
        (``"unseen"``, the released code) or at seen-class pixels (``"seen"``, the paper)."""
        seen, unseen = self._split_ids()
        inductive = self.config.setting == "inductive"
        label = batch["label"].to(device).long()
        if self.config.trusty_target == "seen":
            if inductive:  # labels hold seen positions, 255 elsewhere
                return (label != IGNORE_INDEX)[:, None].float()
            return torch.isin(label, torch.tensor(seen, device=device))[:, None].float()
        full = batch.get("label_full") if inductive else label
        if full is None:
            raise ConfigError(
                "trusty_target 'unseen' in inductive training needs batch['label_full'] "
                "(unmasked labels); use the 'semantic' pipeline or trusty_target: seen"
            )
        unseen_ids = torch.tensor(unseen, dtype=torch.long, device=device)
        return torch.isin(full.to(device).long(), unseen_ids)[:, None].float()

    def loss(self, batch: dict[str, Any], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Focal + dice on M_R (255 pixels are negatives for every class), trusty loss on M_A."""
        cfg = self.config
        logits, label = outputs["logits"], outputs["label"]
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

    def config_dict(self) -> dict[str, Any]:
        """The config; ``init_from`` is dropped (the weights are in the model folder)."""
        return {**to_dict(self.config), "init_from": None}


def warm_start(model: TagCLIP, source: str | Path) -> list[str]:
    """Copy every same-named tensor of a model folder or training checkpoint ``source`` into
    ``model`` (e.g. TagCLIP from ZegCLIP, transductive from inductive); tensors the model lacks
    (τ when it is off) are skipped, a shape mismatch is an error.

    Returns the names of the parameters left at their initial values (τ and the trusty learner
    when starting TagCLIP from ZegCLIP). A training checkpoint's split is kept in
    ``model.init_split``; transductive training checks it (model folders record no split).
    """
    from safetensors.torch import load_file

    from vocaseg.engine.checkpoint import load_checkpoint
    from vocaseg.models.registry import MODEL_WEIGHTS

    source = Path(source)
    if source.is_dir():
        if not (source / MODEL_WEIGHTS).is_file():
            raise CheckpointError(
                f"init_from: {source} has no {MODEL_WEIGHTS}; pass a model folder"
            )
        state = load_file(str(source / MODEL_WEIGHTS))
    else:
        checkpoint = load_checkpoint(source, model.name or None)
        state = checkpoint["model"]
        model.init_split = checkpoint.get("split")
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise CheckpointError(f"init_from {source}: shapes differ: {'; '.join(wrong[:5])}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return sorted(set(own) - set(state))


def _build(cfg: TagCLIPConfig, clip: nn.Module) -> TagCLIP:
    model = TagCLIP(cfg, clip)
    if cfg.init_from:
        missing = warm_start(model, cfg.init_from)
        if missing:
            print(f"init_from {cfg.init_from}: left at initial values: {', '.join(missing)}")
    return model


register_model(
    "tagclip",
    TagCLIPConfig,
    "TagCLIP: zero-shot segmentation with a trusty token (frozen CLIP ViT + VPT + ATM head)",
)(_build)
register_model(
    "zegclip",
    TagCLIPConfig,
    "ZegCLIP: frozen CLIP ViT + deep VPT + relationship descriptor + ATM head",
    trusty_token=False,
    trusty_learner=False,
    mask_weight=100.0,
    head_init="torch_default_cloned",
    trusty_weighting="none",
)(_build)
