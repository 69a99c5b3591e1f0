"""Vocabulary -> CLIP text embeddings: prompt ensembling, synonym modes, memory and disk caches.

Ensembling (encode every template, L2-normalise each, average, renormalise):
docs/methods/maskclip.md §5 and docs/methods/tagclip.md §2.2; synonym modes: docs/datasets.md §3.

Every name is encoded once per (text weights, template set) and process: embeddings live in a
process-wide memory cache and, one small safetensors file per name, in an on-disk cache keyed by a
hash of the text tower's weights and of the template texts, so another process reuses them.
Because the text transformer is causal, the embedding taken at the end-of-text token does not depend
on the padding after it; each batch is therefore cut to its longest prompt instead of 77 tokens.

Public: ``TextEmbedder``, ``SYNONYM_MODES``, ``text_weights_id(clip)``, ``clear_memory_cache()``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from vocaseg.clip.hub import cache_root
from vocaseg.clip.tokenizer import default_tokenizer
from vocaseg.errors import ConfigError, VocabularyError
from vocaseg.hashing import tensors_sha256, text_sha256
from vocaseg.io import atomic_path
from vocaseg.text.templates import get_templates
from vocaseg.text.vocab import Vocabulary

#: ``mean``/``first``/``joined`` give one row per class; ``max_prob``/``max_logit`` score every name
#: (``embed_queries``) and reduce over each class's names after scoring.
SYNONYM_MODES = ("mean", "first", "joined", "max_prob", "max_logit")
CLASS_MODES = ("mean", "first", "joined")
#: How a name's per-template embeddings become one: ``clip`` L2-normalises each, averages and
#: renormalises (CLIP's prompt ensembling); ``groupvit`` averages the raw embeddings, then
#: normalises (GroupViT's ``build_text_embedding``).
TEMPLATE_AGGREGATIONS = ("clip", "groupvit")

# (text weights id, templates id, name) -> unit-norm ensemble embedding [D], fp32 on the CPU.
_MEMORY: dict[tuple[str, str, str], Tensor] = {}


def clear_memory_cache() -> None:
    """Forget every embedding cached in this process (the disk cache is kept)."""
    _MEMORY.clear()


def text_weights_id(clip: nn.Module) -> str:
    """SHA-256 of the text tower: names, dtypes, shapes and bytes of every non-``visual.`` tensor."""
    return tensors_sha256(
        (key, tensor)
        for key, tensor in clip.state_dict().items()
        if not key.startswith("visual.") and key != "logit_scale"
    )


def default_cache_dir() -> Path:
    """``text/`` in the weights cache: ``$VOCASEG_CACHE/text``, else ``~/.cache/vocaseg/text``."""
    return cache_root() / "text"


class TextEmbedder:
    """Encode class names with a CLIP text tower and a template set; cache every name's embedding.

    ``clip`` needs ``encode_text(tokens[N, L]) -> [N, D]`` (L up to the context length),
    ``config.context_length`` and ``token_embedding`` (for the device). ``template_agg`` is one of
    :data:`TEMPLATE_AGGREGATIONS`. ``weights_id`` names the
    text weights in cache keys (default: :func:`text_weights_id`, computed on first use; the weights
    are assumed frozen from then on). ``cache_dir`` defaults to :func:`default_cache_dir`;
    ``disk_cache=False`` keeps embeddings in memory only. ``encoder_calls`` counts ``encode_text``
    batches and ``texts_encoded`` the prompts they held.
    """

    def __init__(
        self,
        clip: nn.Module,
        templates: str | Sequence[str] = "imagenet80",
        synonym_mode: str = "mean",
        template_agg: str = "clip",
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None = None,
        weights_id: str | None = None,
        disk_cache: bool = True,
    ) -> None:
        if synonym_mode not in SYNONYM_MODES:
            raise ConfigError(
                f"unknown synonym_mode {synonym_mode!r}; choose one of {', '.join(SYNONYM_MODES)}"
            )
        if template_agg not in TEMPLATE_AGGREGATIONS:
            raise ConfigError(
                f"unknown template_agg {template_agg!r}; choose one of "
                f"{', '.join(TEMPLATE_AGGREGATIONS)}"
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.clip = clip
        self.templates = get_templates(templates)
        self.templates_name = templates if isinstance(templates, str) else "custom"
        self.template_agg = template_agg
        # Cache key of (templates, aggregation); CLIP's rule keeps the key of the templates alone.
        suffix = "" if template_agg == "clip" else f"\nagg={template_agg}"
        self.templates_id = text_sha256("\n".join(self.templates) + suffix)
        self.synonym_mode = synonym_mode
        self.batch_size = batch_size
        self.cache_dir = None if not disk_cache else Path(cache_dir or default_cache_dir())
        self._weights_id = weights_id
        self.encoder_calls = 0
        self.texts_encoded = 0

    @property
    def weights_id(self) -> str:
        if self._weights_id is None:
            self._weights_id = text_weights_id(self.clip)
        return self._weights_id

    def settings(self) -> dict[str, str | int]:
        """What moves the embeddings, for recording next to results."""
        return {
            "templates": self.templates_name,
            "templates_sha256": self.templates_id,
            "num_templates": len(self.templates),
            "synonym_mode": self.synonym_mode,
            "template_agg": self.template_agg,
            "text_weights": self.weights_id,
        }

    def embed(self, vocabulary: Vocabulary | Sequence[str | Sequence[str]]) -> Tensor:
        """One unit-norm row per class, ``[K, D]`` fp32 on the model's device.

        ``mean``: the renormalised mean of the class's name embeddings; ``first``: its first name;
        ``joined``: its names joined with ", " as one text.
        """
        vocabulary = _as_vocabulary(vocabulary)
        if self.synonym_mode not in CLASS_MODES:
            raise ValueError(
                f"synonym_mode {self.synonym_mode!r} scores each name separately; call "
                "embed_queries() and reduce over vocabulary.query_to_class after scoring"
            )
        if self.synonym_mode == "first":
            return self.embed_names([names[0] for names in vocabulary.classes])
        if self.synonym_mode == "joined":
            return self.embed_names([", ".join(names) for names in vocabulary.classes])
        queries = self.embed_names(vocabulary.queries)  # [Q, D]
        index = torch.tensor(vocabulary.query_to_class, device=queries.device)
        sums = queries.new_zeros(len(vocabulary), queries.shape[1]).index_add_(0, index, queries)
        return F.normalize(sums, dim=-1)  # the mean's direction: [K, D]

    def embed_queries(self, vocabulary: Vocabulary | Sequence[str | Sequence[str]]) -> Tensor:
        """One unit-norm row per name (``vocabulary.queries`` order), ``[Q, D]``."""
        return self.embed_names(_as_vocabulary(vocabulary).queries)

    def embed_names(self, names: Sequence[str]) -> Tensor:
        """Template-ensembled unit-norm embeddings of ``names``, ``[len(names), D]``."""
        keys = {name: (self.weights_id, self.templates_id, name) for name in names}
        missing = [name for name in dict.fromkeys(names) if keys[name] not in _MEMORY]
        missing = [name for name in missing if not self._load(name, keys[name])]
        if missing:
            for name, row in zip(missing, self._encode(missing)):
                _MEMORY[keys[name]] = row
                self._save(name, keys[name], row)
        device = self.clip.token_embedding.weight.device
        return torch.stack([_MEMORY[keys[name]] for name in names]).to(device)

    def _encode(self, names: list[str]) -> Tensor:
        """Run the text tower on every (name, template) prompt: ``[len(names), D]`` fp32 CPU."""
        tokenizer = default_tokenizer()
        context = self.clip.config.context_length
        prompts, lengths = [], []
        for name in names:
            for template in self.templates:
                prompt = template.replace("{}", name)
                length = len(tokenizer.encode(prompt)) + 2  # + start and end tokens
                if length > context:
                    raise VocabularyError(
                        f"class name {name!r} is too long for the text encoder: the prompt "
                        f"{prompt!r} takes {length} tokens, more than its context of {context}; "
                        "shorten the name"
                    )
                prompts.append(prompt)
                lengths.append(length)
        tokens = tokenizer(prompts, context_length=context)  # [N, context]
        # Prompts of similar length batch together, so little is padded.
        order = sorted(range(len(prompts)), key=lengths.__getitem__)
        device = self.clip.token_embedding.weight.device
        features = [None] * len(prompts)
        starts = range(0, len(order), self.batch_size)
        # fp32 whatever autocast the caller runs under, so the cached rows do not depend on it.
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for start in tqdm(starts, desc="text", unit="batch", disable=len(starts) < 2):
                batch = order[start : start + self.batch_size]
                width = max(lengths[i] for i in batch)  # causal: padding after EOT is never seen
                out = self.clip.encode_text(tokens[batch, :width].to(device))
                out = out.float().cpu()  # [b, D]
                if self.template_agg == "clip":
                    out = F.normalize(out, dim=-1)
                for i, row in zip(batch, out):
                    features[i] = row
                self.encoder_calls += 1
                self.texts_encoded += len(batch)
        per_template = torch.stack(features).view(len(names), len(self.templates), -1)  # [N, T, D]
        return F.normalize(per_template.mean(dim=1), dim=-1)

    def _path(self, key: tuple[str, str, str]) -> Path:
        weights_id, templates_id, name = key
        folder = self.cache_dir / text_sha256(weights_id)[:16] / templates_id[:16]
        return folder / f"{text_sha256(name)[:32]}.safetensors"

    def _load(self, name: str, key: tuple[str, str, str]) -> bool:
        """Fill the memory cache from disk; False when absent, unreadable or for another name."""
        if self.cache_dir is None:
            return False
        path = self._path(key)
        if not path.is_file():
            return False
        try:
            with safe_open(path, framework="pt") as handle:
                if (handle.metadata() or {}).get("name") != name:
                    return False
                _MEMORY[key] = handle.get_tensor("embedding").float()
        except (SafetensorError, OSError):
            return False
        return True

    def _save(self, name: str, key: tuple[str, str, str], row: Tensor) -> None:
        """Write one row to the disk cache; an unwritable cache only warns and is then skipped."""
        if self.cache_dir is None:
            return
        metadata = {"name": name, "weights_id": key[0], "templates": "\n".join(self.templates)}
        try:
            with atomic_path(self._path(key)) as tmp:
                save_file({"embedding": row.contiguous()}, tmp, metadata=metadata)
        except OSError as error:
            warnings.warn(
                f"text-embedding cache {self.cache_dir} is not writable ({error}); embeddings "
                "stay in memory only. Set VOCASEG_CACHE to a writable folder to keep them.",
                stacklevel=3,
            )
            self.cache_dir = None


def _as_vocabulary(vocabulary: Vocabulary | Sequence[str | Sequence[str]]) -> Vocabulary:
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, str):
        return Vocabulary.parse(vocabulary)
    return Vocabulary.from_names(vocabulary)


__all__ = [
    "SYNONYM_MODES",
    "TEMPLATE_AGGREGATIONS",
    "TextEmbedder",
    "clear_memory_cache",
    "default_cache_dir",
    "text_weights_id",
]
