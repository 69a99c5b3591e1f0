"""Pure-PyTorch CLIP (Radford et al., 2021, "Learning Transferable Visual Models From Natural
Language Supervision"): the ViT and ModifiedResNet image towers, the causal text transformer, and
``CLIPConfig``. Architectures and key names: docs/clip-weights.md §2, §7.

Parameter names follow the OpenAI release exactly, so OpenAI and open_clip state dicts load without
renaming. Unlike the original, token sequences are batch-first ``[B, N, C]`` everywhere and all
attention goes through ``F.scaled_dot_product_attention``.

Hooks for the segmentation methods (MaskCLIP, TagCLIP, GKC):

- ``VisionTransformer.interpolate_pos_embed(h, w)``, ``.embed(x)``, ``.forward_features(x, ...)``;
  the ViT runs at any input size that is a multiple of the patch size.
- Every ``ResidualAttentionBlock`` runs alone (``block(x)``); its ``attn`` exposes
  ``in_proj_weight``, ``in_proj_bias``, ``out_proj`` and ``num_heads``.
- ``ModifiedResNet.forward_features(x)`` gives ``res2..res5``; ``AttentionPool2d`` runs at any size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocaseg.errors import ConfigError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("quick_gelu", "gelu")


@dataclass
class CLIPConfig:
    """Architecture of a CLIP model (docs/clip-weights.md §2).

    ``vision_layers`` is an int for a ViT or a 4-tuple of blocks per stage for a ModifiedResNet
    (then ``vision_patch_size`` is None). Head counts default to width // 64 (ViT, text) and
    32 · width // 64 (ResNet attention pool). ``mean``/``std`` are on the 0-1 pixel scale.
    """

    embed_dim: int
    image_size: int
    vision_layers: int | tuple[int, int, int, int]
    vision_width: int
    vision_patch_size: int | None
    text_width: int
    text_layers: int
    vision_heads: int | None = None
    text_heads: int | None = None
    context_length: int = 77
    vocab_size: int = 49408
    activation: str = "quick_gelu"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    def __post_init__(self) -> None:
        if isinstance(self.vision_layers, (list, tuple)):
            self.vision_layers = tuple(int(n) for n in self.vision_layers)
            if len(self.vision_layers) != 4:
                raise ConfigError(
                    f"vision_layers {self.vision_layers} must be an int (ViT) or 4 stage depths "
                    "(ModifiedResNet)"
                )
            if self.vision_patch_size is not None:
                raise ConfigError("a ModifiedResNet config needs vision_patch_size=None")
        elif self.vision_patch_size is None:
            raise ConfigError("a ViT config (int vision_layers) needs vision_patch_size")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if self.vision_heads is None:
            width = self.vision_width * 32 if not self.is_vit else self.vision_width
            self.vision_heads = max(1, width // 64)
        if self.text_heads is None:
            self.text_heads = max(1, self.text_width // 64)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    @property
    def is_vit(self) -> bool:
        return not isinstance(self.vision_layers, tuple)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPConfig:
        """Build from a plain dict (e.g. JSON, lists for tuples); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown CLIPConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists); inverse of :meth:`from_dict`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def resize_pos_embed(pos: Tensor, grid_size: int, h: int, w: int) -> Tensor:
    """Resize a ``[1 + G*G, C]`` positional table (row 0 kept) to an ``h`` × ``w`` grid:
    ``[1 + h*w, C]``, bicubic, align_corners=False, computed in fp32. Returns ``pos`` itself when
    the grid is unchanged."""
    if (h, w) == (grid_size, grid_size):
        return pos
    first, grid = pos[:1], pos[1:]
    # [G*G, C] -> [1, C, G, G]
    grid = grid.float().reshape(grid_size, grid_size, -1).permute(2, 0, 1).unsqueeze(0)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    # [1, C, h, w] -> [h*w, C]
    grid = grid.squeeze(0).flatten(1).t().to(first.dtype)
    return torch.cat([first, grid], dim=0)


class QuickGELU(nn.Module):
    """x · sigmoid(1.702 x), the activation of the OpenAI CLIP transformers."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        # inference: one temporary instead of two on the widest activation in the model
        return torch.mul(x, 1.702).sigmoid_().mul_(x)


def make_activation(name: str) -> nn.Module:
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class MultiheadAttention(nn.Module):
    """Self-attention with OpenAI's fused ``in_proj`` (q, k, v stacked on dim 0) and ``out_proj``.

    Input and output are batch-first ``[B, N, C]``. ``attn_mask`` is an additive float mask
    broadcastable to ``[B, heads, N, N]``.
    """

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ConfigError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # [B, N, 3C] -> [3, B, heads, N, head_dim]
        qkv = qkv.view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        # [B, heads, N, head_dim] -> [B, N, C]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); MLP ratio 4."""

    def __init__(self, width: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, 4 * width),
                gelu=make_activation(activation),
                c_proj=nn.Linear(4 * width, width),
            )
        )

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock`` s in ``resblocks`` (batch-first tokens)."""

    def __init__(self, width: int, layers: int, heads: int, activation: str) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, activation) for _ in range(layers)
        )

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class VisionTransformer(nn.Module):
    """CLIP ViT image tower; ``forward(x[B,3,H,W]) -> [B, embed_dim]`` at any H, W multiple of
    the patch size (the positional embedding is resized to the token grid)."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        activation: str = "quick_gelu",
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def interpolate_pos_embed(self, h: int, w: int) -> Tensor:
        """Positional embedding for an ``h`` × ``w`` token grid: ``[1 + h*w, C]``.

        The class row is kept; the training grid is resized bicubically (align_corners=False, in
        fp32). Returns the parameter itself at the training grid.
        """
        return resize_pos_embed(self.positional_embedding, self.grid_size, h, w)

    def embed(self, x: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> tokens ``[B, 1 + h*w, C]`` (patch conv, class token,
        positional embedding resized to the grid, ``ln_pre``); patches row-major, h = H // patch."""
        x = self.conv1(x.to(self.conv1.weight.dtype))  # [B, C, h, w]
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.interpolate_pos_embed(h, w).to(x.dtype)
        return self.ln_pre(x)

    def forward_features(self, x: Tensor, return_layers: Sequence[int] = (-1,)) -> list[Tensor]:
        """Token sequences ``[B, 1 + h*w, C]`` after the blocks in ``return_layers`` (0-based,
        negative counts from the end; ``-1`` is the last block, before ``ln_post``), in the order
        given. Blocks after the deepest requested one are not run (``(-2,)`` gives the input of
        the last block, as MaskCLIP needs)."""
        depth = self.transformer.layers
        wanted = [i % depth for i in return_layers]
        outputs: dict[int, Tensor] = {}
        x = self.embed(x)
        for i, block in enumerate(self.transformer.resblocks[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:  # keep only what was asked for: memory is reused, not re-faulted
                outputs[i] = x
        return [outputs[i] for i in wanted]

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.forward_features(x)[0]
        return self.ln_post(tokens[:, 0]) @ self.proj


class Bottleneck(nn.Module):
    """ModifiedResNet bottleneck: strided blocks average-pool before ``conv3`` and in the shortcut
    (``downsample`` = AvgPool, 1x1 conv, BN; the pool is named ``-1`` and holds no weights)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                        ("1", nn.BatchNorm2d(planes * self.expansion)),
                    ]
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pool: the mean token plus all spatial tokens, with positional embedding,
    through one multi-head attention layer (separate ``q_proj``/``k_proj``/``v_proj``, output
    projection ``c_proj`` = the image projection). Runs at any spatial size (the positional
    grid is resized bicubically)."""

    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.num_heads = num_heads
        self.positional_embedding = nn.Parameter(
            torch.randn(grid_size**2 + 1, embed_dim) / embed_dim**0.5
        )
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def interpolate_pos_embed(self, h: int, w: int) -> Tensor:
        """Positional embedding ``[1 + h*w, C]`` for an ``h`` × ``w`` grid (bicubic, fp32)."""
        return resize_pos_embed(self.positional_embedding, self.grid_size, h, w)

    def _attend(self, x: Tensor, all_queries: bool) -> Tensor:
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [B, 1 + h*w, C]
        x = x + self.interpolate_pos_embed(h, w).to(x.dtype)
        q = self.q_proj(x if all_queries else x[:, :1])

        def heads(t: Tensor) -> Tensor:  # [B, N, C] -> [B, heads, N, C / heads]
            return t.view(b, t.shape[1], self.num_heads, c // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(self.k_proj(x)), heads(self.v_proj(x)))
        # [B, heads, Nq, C / heads] -> [B, Nq, output_dim]
        return self.c_proj(out.transpose(1, 2).reshape(b, -1, c))

    def forward_tokens(self, x: Tensor) -> Tensor:
        """Features ``[B, C, h, w]`` -> every output token ``[B, 1 + h*w, output_dim]``: token 0
        is the pooled (global) one, the rest are the attended spatial tokens (row-major)."""
        return self._attend(x, all_queries=True)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``[B, C, h, w]`` -> pooled embedding ``[B, output_dim]``."""
        return self._attend(x, all_queries=False)[:, 0]


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: a 3-conv stem with average pooling, bottleneck stages with anti-aliased
    (average-pool) striding, and an attention pool instead of global average pooling."""

    def __init__(
        self, layers: Sequence[int], output_dim: int, heads: int, image_size: int, width: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def stem(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, width, H/4, W/4]``."""
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Stage outputs ``res2..res5`` at strides 4, 8, 16, 32 (4, 8, 16, 32 × width channels);
        the attention pool is not applied."""
        x = self.stem(x)
        feats = {}
        for name, layer in zip(
            ("res2", "res3", "res4", "res5"), (self.layer1, self.layer2, self.layer3, self.layer4)
        ):
            x = layer(x)
            feats[name] = x
        return feats

    def forward(self, x: Tensor) -> Tensor:
        return self.attnpool(self.forward_features(x)["res5"])


class CLIP(nn.Module):
    """CLIP with OpenAI parameter names: ``visual`` (ViT or ModifiedResNet), text
    ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
    ``text_projection`` and ``logit_scale``. The causal mask is a non-persistent buffer."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = config
        if config.is_vit:
            self.visual: VisionTransformer | ModifiedResNet = VisionTransformer(
                image_size=config.image_size,
                patch_size=config.vision_patch_size,
                width=config.vision_width,
                layers=config.vision_layers,
                heads=config.vision_heads,
                output_dim=config.embed_dim,
                activation=config.activation,
            )
        else:
            self.visual = ModifiedResNet(
                layers=config.vision_layers,
                output_dim=config.embed_dim,
                heads=config.vision_heads,
                image_size=config.image_size,
                width=config.vision_width,
            )
        self.transformer = Transformer(
            config.text_width, config.text_layers, config.text_heads, config.activation
        )
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(
            torch.empty(config.context_length, config.text_width)
        )
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.empty(config.text_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        mask = torch.full((config.context_length, config.context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self._init_parameters()

    def _init_parameters(self) -> None:
        """OpenAI's initialisation (normal std scaled by width and depth)."""
        cfg = self.config
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features**-0.5
            for linear in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(linear.weight, std=std)
            # Zero-init of each bottleneck's last BN (the residual branches), not the stem's bn3.
            for stage in (
                self.visual.layer1,
                self.visual.layer2,
                self.visual.layer3,
                self.visual.layer4,
            ):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)
        width, layers = cfg.text_width, cfg.text_layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def encode_image(self, image: Tensor) -> Tensor:
        """Normalised images ``[B, 3, H, W]`` -> embeddings ``[B, embed_dim]`` (not L2-normalised)."""
        return self.visual(image.to(self.dtype))

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Token ids ``[N, L]`` (L <= context_length) -> embeddings ``[N, embed_dim]`` (not
        L2-normalised), pooled at the end-of-text token (the largest id in each row)."""
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]  # [N, L, C]
        x = self.transformer(x, self.attn_mask[:n, :n].to(x.dtype))
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # [N, C]
        return eot @ self.text_projection

    def forward(self, image: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """CLIP logits: ``(logits_per_image [B, N], logits_per_text [N, B])``."""
        img = F.normalize(self.encode_image(image), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()
