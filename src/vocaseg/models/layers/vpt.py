"""Deep visual prompt tuning of a frozen CLIP ViT (Jia et al., "Visual Prompt Tuning", ECCV 2022),
in the form ZegCLIP and TagCLIP use it (docs/methods/tagclip.md §2.1).

:class:`VisualPrompts` holds only the trainable parts (``shallow``, ``deep``, ``proj``, ``norm``);
:meth:`VisualPrompts.encode` runs CLIP's own patch embedding and transformer blocks with the
prompts inserted, so the ViT itself is never re-implemented.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def bilinear_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bilinearly resize a ViT positional table [1 + S·S, D] to [1 + h·w, D] (align_corners=False)."""
    side = math.isqrt(pos.shape[0] - 1)
    if (side, side) == tuple(grid):
        return pos
    patch = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, D, S, S]
    patch = F.interpolate(patch, size=grid, mode="bilinear", align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)  # [h·w, D]
    return torch.cat([pos[:1], patch], dim=0)


class VisualPrompts(nn.Module):
    """N learnable prompt tokens per block of a ViT of ``depth`` blocks and ``width`` channels.

    Block 0 reads ``shallow`` [1, N, D]; block i >= 1 reads ``deep[i - 1]`` ([depth - 1, N, D]);
    all pass through one shared ``proj`` and per-image dropout. ``norm`` (eps 1e-6) follows the last block.
    With ``grad_checkpointing`` the (deterministic, frozen) blocks keep no activations for the
    backward pass and are recomputed there instead: less memory for one more forward.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        num_tokens: int,
        patch_size: int = 16,
        dropout: float = 0.1,
        cls_double_embedding: bool = True,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.grad_checkpointing = grad_checkpointing
        self.cls_double_embedding = cls_double_embedding
        self.shallow = nn.Parameter(torch.empty(1, num_tokens, width))
        self.deep = nn.Parameter(torch.empty(depth - 1, num_tokens, width))
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.reset_parameters(patch_size)

    def reset_parameters(self, patch_size: int) -> None:
        """Prompts ~ U(±sqrt(6 / (3·p·p + D))); ``proj`` weight kaiming-normal (fan_out)."""
        width = self.shallow.shape[-1]
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + width))
        nn.init.uniform_(self.shallow, -bound, bound)
        nn.init.uniform_(self.deep, -bound, bound)
        nn.init.kaiming_normal_(self.proj.weight, a=0, mode="fan_out")

    def _prompts(self, raw: Tensor, batch: int) -> Tensor:
        # Expand first: each image draws its own dropout mask (as the reference VPT).
        return self.dropout(self.proj(raw).expand(batch, -1, -1))  # [B, N, D]

    def encode(self, visual: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
        """Run CLIP's ViT ``visual`` on ``images`` [B, 3, H, W] with the prompts.

        Returns the L2-normalised global embedding g [B, E] and patch embeddings P [B, E, h, w].
        """
        x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, D, h, w]
        batch, width, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, h·w, D]
        pos = bilinear_pos_embed(visual.positional_embedding, (h, w)).to(x.dtype)
        cls = visual.class_embedding.to(x.dtype)
        cls = (2 * cls if self.cls_double_embedding else cls) + pos[0]  # [D]
        x = torch.cat([cls.expand(batch, 1, width), x + pos[1:]], dim=1)  # [B, 1 + h·w, D]
        x = visual.ln_pre(x)
        x = torch.cat([x[:, :1], self._prompts(self.shallow, batch), x[:, 1:]], dim=1)
        n = self.num_tokens
        for i, block in enumerate(visual.transformer.resblocks):
            if i > 0:
                x = torch.cat(
                    [x[:, :1], self._prompts(self.deep[i - 1 : i], batch), x[:, 1 + n :]], 1
                )
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = visual.ln_post(self.norm(x)) @ visual.proj  # [B, 1 + N + h·w, E]
        g = F.normalize(x[:, 0], dim=-1)
        patches = x[:, 1 + n :].transpose(1, 2).reshape(batch, -1, h, w)  # [B, E, h, w]
        return g, F.normalize(patches, dim=1)
