"""Known CLIP weights and the public ``build`` / ``load`` entry points.

docs/clip-weights.md §1-§4 (model list, architecture numbers, activations, mean/std, hub repos
and the nine OpenAI archive hashes). ``build`` makes a randomly initialised CLIP of a known
architecture; ``load`` reads weights from a known name (downloaded on first use) or a local file.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vocaseg.clip import convert, hub
from vocaseg.clip.model import CLIP, OPENAI_MEAN, OPENAI_STD, CLIPConfig
from vocaseg.clip.safe_load import load_untrusted
from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.hashing import file_sha256

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def _vit(embed: int, image: int, layers: int, width: int, patch: int, text: int) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed,
        image_size=image,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=patch,
        text_width=text,
        text_layers=12,
    )


def _rn(
    embed: int, image: int, layers: tuple[int, int, int, int], width: int, text: int
) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=embed,
        image_size=image,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=None,
        text_width=text,
        text_layers=12,
    )


#: Architecture of each OpenAI model name (docs/clip-weights.md §2); QuickGELU, OpenAI mean/std.
ARCHITECTURES: dict[str, CLIPConfig] = {
    "RN50": _rn(1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _rn(512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _rn(640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _rn(768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _rn(1024, 448, (3, 15, 36, 10), 128, 1024),
    "ViT-B/32": _vit(512, 224, 12, 768, 32, 512),
    "ViT-B/16": _vit(512, 224, 12, 768, 16, 512),
    "ViT-L/14": _vit(768, 224, 24, 1024, 14, 768),
    "ViT-L/14@336px": _vit(768, 336, 24, 1024, 14, 768),
}

_AZURE = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class KnownWeights:
    """One downloadable checkpoint (docs/clip-weights.md §4).

    ``filenames`` are tried in order in hub ``repo`` at ``revision``; no commit of these repos is
    pinned (docs/clip-weights.md §4.1), so every revision is ``"main"``. ``sha256`` is the hub
    file's hash where a primary source gives it (none does today). ``openai_url``/``openai_sha256``
    name the original TorchScript archive, the fallback for the nine OpenAI models.
    """

    name: str
    arch: str
    repo: str
    filenames: tuple[str, ...]
    activation: str = "quick_gelu"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    revision: str = "main"
    sha256: str | None = None
    openai_url: str | None = None
    openai_sha256: str | None = None

    @property
    def config(self) -> CLIPConfig:
        return replace(
            ARCHITECTURES[self.arch], activation=self.activation, mean=self.mean, std=self.std
        )


_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _openai(name: str, repo: str, file: str, sha: str) -> KnownWeights:
    return KnownWeights(
        name=name,
        arch=name,
        repo=repo,
        filenames=_OPEN_CLIP_FILES,
        openai_url=f"{_AZURE}/{sha}/{file}",
        openai_sha256=sha,
    )


#: The twelve known checkpoints (docs/clip-weights.md §1), by canonical name.
KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        _openai(
            "RN50",
            "timm/resnet50_clip.openai",
            "RN50.pt",
            "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
        ),
        _openai(
            "RN101",
            "timm/resnet101_clip.openai",
            "RN101.pt",
            "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
        ),
        _openai(
            "RN50x4",
            "timm/resnet50x4_clip.openai",
            "RN50x4.pt",
            "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
        ),
        _openai(
            "RN50x16",
            "timm/resnet50x16_clip.openai",
            "RN50x16.pt",
            "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
        ),
        _openai(
            "RN50x64",
            "timm/resnet50x64_clip.openai",
            "RN50x64.pt",
            "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
        ),
        _openai(
            "ViT-B/32",
            "timm/vit_base_patch32_clip_224.openai",
            "ViT-B-32.pt",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        ),
        _openai(
            "ViT-B/16",
            "timm/vit_base_patch16_clip_224.openai",
            "ViT-B-16.pt",
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        ),
        _openai(
            "ViT-L/14",
            "timm/vit_large_patch14_clip_224.openai",
            "ViT-L-14.pt",
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        ),
        _openai(
            "ViT-L/14@336px",
            "timm/vit_large_patch14_clip_336.openai",
            "ViT-L-14-336px.pt",
            "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
        ),
        KnownWeights(
            name="ViT-B-16:laion2b_s34b_b88k",
            arch="ViT-B/16",
            repo="laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
            filenames=_OPEN_CLIP_FILES,
            activation="gelu",
        ),
        KnownWeights(
            name="ViT-L-14:laion2b_s32b_b82k",
            arch="ViT-L/14",
            repo="laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
            # the hub's safetensors conversion is named after the .bin (docs/clip-weights.md §4.1)
            filenames=("open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin"),
            activation="gelu",
            mean=INCEPTION_MEAN,
            std=INCEPTION_STD,
        ),
        KnownWeights(
            name="ViT-B-32:laion2b_s34b_b79k",
            arch="ViT-B/32",
            repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            filenames=_OPEN_CLIP_FILES,
            activation="gelu",
        ),
    )
}


def _alias(name: str) -> str:
    """Spelling-insensitive key: ``ViT-B/16`` == ``vit-b-16`` == ``ViT-B-16:openai``;
    ``ViT-L/14@336px`` == ``ViT-L-14-336``; ``ViT-B-16:laion2b_s34b_b88k`` == ``..laion2b-s34b-b88k``."""
    key = name.strip().lower().replace("/", "-").replace("_", "-")
    key = re.sub(r"@336(px)?$", "-336", key)
    key = re.sub(r"[:@ ]openai$", "", key)
    return re.sub(r"-quickgelu$", "", key).replace("@", ":")


_ALIASES = {_alias(n): n for n in [*ARCHITECTURES, *KNOWN_WEIGHTS]}


def canonical_name(name: str) -> str | None:
    """The canonical known name for ``name`` in any common spelling, or None if unknown."""
    return _ALIASES.get(_alias(name))


def known_names() -> list[str]:
    """Canonical names accepted by :func:`build` and :func:`load`."""
    return list(KNOWN_WEIGHTS)


def build(name_or_config: str | CLIPConfig) -> CLIP:
    """A randomly initialised CLIP (eval mode) of a known architecture or a ``CLIPConfig``.

    Never downloads. A known LAION name gives its architecture with its activation and mean/std.
    """
    if isinstance(name_or_config, CLIPConfig):
        return CLIP(name_or_config).eval()
    name = canonical_name(name_or_config)
    if name is None:
        raise ConfigError(
            f"unknown CLIP architecture {name_or_config!r}; known: {', '.join(known_names())}"
        )
    config = KNOWN_WEIGHTS[name].config if name in KNOWN_WEIGHTS else ARCHITECTURES[name]
    return CLIP(config).eval()


def download(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch the known weights ``name`` into the cache (no-op when cached); returns the file."""
    canonical = canonical_name(name)
    if canonical not in KNOWN_WEIGHTS:
        raise ConfigError(f"unknown CLIP weights {name!r}; known: {', '.join(known_names())}")
    return hub.fetch(KNOWN_WEIGHTS[canonical], cache_dir)


def load(
    source: str | os.PathLike,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    activation: str | None = None,
) -> CLIP:
    """A pretrained CLIP in eval mode, fp32, on ``device``.

    ``source`` is a known name (``"ViT-B/16"``, ``"RN50"``, ``"ViT-L-14:laion2b_s32b_b82k"``, ...;
    downloaded on first use, see :mod:`vocaseg.clip.hub`) or a local path: an OpenAI TorchScript
    archive or state dict, an open_clip ``.bin``/``.pt``/``.safetensors`` (``state_dict``
    wrappers and ``module.`` prefixes allowed), a Hugging Face ``CLIPModel`` folder or its bare
    ``.safetensors``. The architecture is read from the tensors. The activation comes from the HF
    ``config.json``, else the known table when the file is recognised (by name or archive hash),
    else QuickGELU; ``activation`` overrides all of these.
    """
    path = Path(source).expanduser()
    entry = None
    if not path.exists():
        name = canonical_name(str(source))
        if name not in KNOWN_WEIGHTS:
            raise CheckpointError(
                f"{source}: no such file or folder, and not a known CLIP name; pass a checkpoint "
                f"path or one of: {', '.join(known_names())}"
            )
        entry = KNOWN_WEIGHTS[name]
        path = hub.fetch(entry, cache_dir)
    state, hf_config, torchscript = _read(path)
    fields: dict[str, Any] = {}
    if convert.is_hf_layout(state):
        state = convert.hf_to_openai(state)
        if hf_config is not None:
            try:
                fields.update(convert.hf_config_fields(hf_config))
            except ValueError as err:
                raise CheckpointError(f"{path}: config.json: {err}") from None
    entry = entry or _identify(path, torchscript)
    if entry is not None:
        fields.setdefault("activation", entry.activation)
        fields.update(mean=entry.mean, std=entry.std)
    if activation is not None:
        fields["activation"] = activation
    state = convert.drop_openai_extras(state)
    try:
        config = convert.infer_config(state, **fields)
    except KeyError as err:
        sample = ", ".join(list(state)[:5])
        if any(key.startswith("clip.") for key in state):  # a method's weights, CLIP inside
            raise CheckpointError(
                f"{path} holds the weights of a vocaseg model (keys clip.*, e.g. {sample}), not "
                "a CLIP; pass its model folder (e.g. runs/NAME/final) with --model, and CLIP "
                "weights (e.g. ViT-B/16 or a CLIP file) with --weights"
            ) from None
        raise CheckpointError(
            f"{path} is not a CLIP checkpoint: it has no {err.args[0]!r} (its keys start: "
            f"{sample}); pass an OpenAI, open_clip or Hugging Face CLIP checkpoint"
        ) from None
    model = CLIP(config)
    check_keys(model, state, str(path))
    model.load_state_dict(state)
    return model.to(device).eval()


def check_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys (10 of each)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return

    def listing(label: str, items: list[str]) -> str:
        more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
        return f"{label} ({len(items)}): {', '.join(items[:10])}{more}"

    parts = [
        listing(label, items)
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    raise CheckpointError(
        f"{what} does not fit the CLIP architecture read from it: {'; '.join(parts)}. "
        "Is it a CLIP checkpoint of another architecture or an incomplete file?"
    )


_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict | None, bool]:
    """(fp32 state dict, HF config.json or None, whether it was a TorchScript archive)."""
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
        if found is None:
            raise CheckpointError(
                f"{path}: the folder holds none of {', '.join(_WEIGHT_FILES)}; pass the weights "
                "file itself or a Hugging Face CLIPModel folder"
            )
        path = found
    hf_config = None
    if (folder / "config.json").is_file():
        try:
            hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{folder / 'config.json'} is unreadable ({err})") from None
    raw, torchscript = _read_file(path)
    try:
        state = convert.unwrap_state_dict(raw)
    except ValueError:
        raise CheckpointError(
            f"{path} holds no dict of tensors; pass a CLIP state dict or checkpoint"
        ) from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, hf_config, torchscript


def _read_file(path: Path) -> tuple[Any, bool]:
    """Load a weights file by its content: safetensors, TorchScript archive or torch pickle."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty; download or copy it again")
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), False
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} is a damaged or truncated safetensors file ({err}); download it again"
            ) from None
    if head[:2] == b"PK":  # zip: torch.save or TorchScript
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(
                f"{path} is a truncated or damaged archive; download or copy it again"
            ) from None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            # TorchScript: tensors plus TorchScript code, never arbitrary pickled objects
            try:
                return torch.jit.load(str(path), map_location="cpu").state_dict(), True
            except RuntimeError as err:
                raise CheckpointError(f"{path} is a damaged TorchScript archive ({err})") from None
    elif head[:1] != b"\x80":  # neither zip nor a legacy pickle
        raise CheckpointError(
            f"{path} is not a checkpoint (not safetensors, zip or pickle); pass a .pt, .bin, "
            ".safetensors file or a Hugging Face folder"
        )
    fix = "pass a plain state dict (.pt, .safetensors) or a Hugging Face CLIPModel folder"
    return load_untrusted(path, fix), False


def _identify(path: Path, torchscript: bool) -> KnownWeights | None:
    """The known entry a local file is, by its name or location, else (OpenAI archives) by hash."""
    text = str(path.resolve())
    for entry in KNOWN_WEIGHTS.values():
        archive = entry.openai_url.rsplit("/", 1)[1] if entry.openai_url else None
        if entry.repo.replace("/", "--") in text or entry.repo in text or path.name == archive:
            return entry
    if torchscript:
        digest = file_sha256(path)
        return next((e for e in KNOWN_WEIGHTS.values() if e.openai_sha256 == digest), None)
    return None
