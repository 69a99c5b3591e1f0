"""Shared fixtures: tiny random CLIPs (ViT and ModifiedResNet) in eval mode with a fixed seed, and
a private weights/text cache so tests never read or write the user's ``~/.cache/vocaseg``."""

from __future__ import annotations

import pytest
import torch

from vocaseg.clip.model import CLIP, CLIPConfig


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """A per-test weights cache and no downloads (for command-line tests)."""
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_clip_file(tiny_vit_clip, tmp_path):
    """``tiny_vit_clip`` saved as an OpenAI-layout state dict, for ``--weights``."""
    path = tmp_path / "tiny_clip.pt"
    torch.save(tiny_vit_clip.state_dict(), path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOCASEG_CACHE", str(tmp_path_factory.mktemp("vocaseg-cache")))
        yield


@pytest.fixture
def tiny_vit_config() -> CLIPConfig:
    """ViT: width 64, 2 layers, 4 heads, patch 16, image 32 (2x2 grid); text width 32, 2 layers."""
    return CLIPConfig(
        embed_dim=32,
        image_size=32,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=16,
        vision_heads=4,
        text_width=32,
        text_layers=2,
        text_heads=2,
    )


@pytest.fixture
def tiny_rn_config() -> CLIPConfig:
    """ModifiedResNet: width 16, one block per stage, image 64 (2x2 grid at stride 32)."""
    return CLIPConfig(
        embed_dim=32,
        image_size=64,
        vision_layers=(1, 1, 1, 1),
        vision_width=16,
        vision_patch_size=None,
        vision_heads=8,
        text_width=32,
        text_layers=2,
        text_heads=2,
    )


@pytest.fixture
def tiny_vit_clip(tiny_vit_config: CLIPConfig) -> CLIP:
    torch.manual_seed(0)
    return CLIP(tiny_vit_config).eval()


@pytest.fixture
def tiny_rn_clip(tiny_rn_config: CLIPConfig) -> CLIP:
    """Random weights with non-trivial BatchNorm statistics and affine terms (not the zero-init
    ``bn3`` of training), so every branch contributes."""
    torch.manual_seed(0)
    model = CLIP(tiny_rn_config)
    with torch.no_grad():
        for module in model.visual.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()
