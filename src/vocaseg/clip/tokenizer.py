"""CLIP's byte-level BPE tokenizer (Radford et al., 2021), written from the algorithm.

Reference: ``openai/CLIP`` ``clip/simple_tokenizer.py``; docs/clip-weights.md §10. Text is
repaired with ftfy, HTML-unescaped twice,
whitespace-collapsed and lower-cased, split with CLIP's regex, mapped byte-by-byte to printable
characters and merged with the 48 894 ranked merges of ``bpe_simple_vocab_16e6.txt.gz``. The
vocabulary has 49 408 entries: 256 byte symbols, the same 256 with a ``</w>`` word-end marker, one
entry per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407). Padding is 0.

Public: ``tokenize(texts)`` (a ``[N, context_length]`` LongTensor) and ``Tokenizer``.
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import re
from pathlib import Path

import ftfy
import regex
import torch

from vocaseg.errors import VocabularyError

VOCAB_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 48894
END_OF_WORD = "</w>"

# Specials first, then contractions, letter runs, single digits, runs of other non-space symbols.
_SPLIT = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")  # stdlib re, as the original (its \s differs from regex's)
_CACHE_LIMIT = 100_000


@functools.cache
def byte_symbols() -> dict[int, str]:
    """Map each byte 0..255 to one printable unicode character, in vocabulary order.

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for themselves and come
    first; the other 68 bytes (control characters, space, soft hyphen, ...) follow in byte order as
    code points 256, 257, ... The insertion order is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return table


def clean_text(text: str) -> str:
    """ftfy repair, HTML unescape (twice: doubly escaped web text), collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
    """CLIP BPE tokenizer: ``encode(text) -> ids`` (no start/end tokens) and ``decode(ids) -> text``."""

    def __init__(self, vocab_file: str | Path = VOCAB_FILE) -> None:
        with gzip.open(vocab_file, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        # Line 0 is a version header; the next NUM_MERGES lines are "left right" pairs by rank.
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT, EOT]
        self.encoder: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self.byte_to_symbol = byte_symbols()
        self.symbol_to_byte = {s: b for b, s in self.byte_to_symbol.items()}
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self._cache: dict[str, tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> tuple[str, ...]:
        """Merge one pre-token (already mapped to byte symbols) into vocabulary entries."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + END_OF_WORD]
        while len(parts) > 1:
            # The lowest-ranked adjacent pair merges first, at every place it occurs.
            best = min(itertools.pairwise(parts), key=lambda p: self.ranks.get(p, NUM_MERGES))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = {SOT: (SOT,), EOT: (EOT,)}
        self._cache[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start and end tokens."""
        ids = []
        for piece in _SPLIT.findall(clean_text(text)):
            word = "".join(self.byte_to_symbol[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(word))
        return ids

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of ``ids``; padding (0 after the end token), start and end tokens are dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if i == self.eot_id:
                break
            if i != self.sot_id:
                tokens.append(self.decoder[i])
        data = bytearray(self.symbol_to_byte[c] for c in "".join(tokens))
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()

    def __call__(
        self, texts: str | list[str], context_length: int = 77, truncate: bool = True
    ) -> torch.Tensor:
        """``[N, context_length]`` ids: start token, text, end token, zero padding."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise VocabularyError("no texts to tokenize; pass at least one string")
        if context_length < 2:
            raise VocabularyError(
                f"context_length={context_length} leaves no room for the start and end tokens; "
                "use 77 (CLIP's context)"
            )
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > context_length:
                if not truncate:
                    raise VocabularyError(
                        f"{text!r} is {len(ids)} tokens long, more than the text encoder's "
                        f"context of {context_length}; shorten it"
                    )
                ids = [*ids[: context_length - 1], self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@functools.cache
def default_tokenizer() -> Tokenizer:
    """The shared tokenizer, built on first use (reading the vocabulary takes ~0.2 s)."""
    return Tokenizer()


def tokenize(
    texts: str | list[str], context_length: int = 77, truncate: bool = True
) -> torch.Tensor:
    """Tokenize like the original CLIP: ``[N, context_length]`` LongTensor, zero-padded.

    Too-long texts keep their first ``context_length - 2`` tokens and end with the end token; with
    ``truncate=False`` they raise :class:`~vocaseg.errors.VocabularyError` naming the text.
    """
    return default_tokenizer()(texts, context_length=context_length, truncate=truncate)
