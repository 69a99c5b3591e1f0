"""CLIP tokenizer: parity with Hugging Face's CLIPTokenizer built from the same merges, the text
clean-up (ftfy, double HTML unescape, whitespace), truncation, padding and errors."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch

from vocaseg.clip import tokenize
from vocaseg.clip.tokenizer import VOCAB_FILE, clean_text, default_tokenizer
from vocaseg.errors import VocabularyError

transformers = pytest.importorskip("transformers")

WORDS = [
    "Hello", "WORLD", "cat", "sofa", "Couch", "MiXeD", "ALLCAPS", "don't", "it's", "we're",
    "they've", "I'm", "you'll", "he'd", "rock'n'roll", "3.14", "2023", "1,000,000", "007", "e-mail",
    "U.S.A.", "C++", "#hashtag", "@user", "http://example.com/a?b=c&d=1", "a/b\\c", "x²", "½",
    "café", "naïve", "Zürich", "jalapeño", "résumé", "¿qué?", "¡hola!", "straße", "Ελληνικά",
    "Москва", "日本語", "中文字符", "한국어", "ไทย", "עברית", "العربية", "😀", "🐱", "👍🏽",
    "🇫🇷", "♥", "→", "...", "---", "(parens)", "[brackets]", "{braces}", "<tag>", "50%", "$9.99",
    "tv monitor", "potted plant", "person in shirt", "a photo of a {}.", "ice-cream", "Wi-Fi",
    "co-operate", "l'été", "O'Neil", "pneumonoultramicroscopicsilicovolcanoconiosis",
]  # fmt: skip
SEPARATORS = [" ", "  ", ", ", "\t", "\n", "! ", "? ", "; ", " - ", ""]


def varied_strings(count: int = 300) -> list[str]:
    rng = random.Random(0)
    texts = ["", " ", "a", "A photo of a cat.", "   leading and trailing   "]
    while len(texts) < count:
        words = rng.choices(WORDS, k=rng.randint(1, 8))
        text = "".join(w + rng.choice(SEPARATORS) for w in words)
        texts.append(text.upper() if rng.random() < 0.1 else text)
    return texts


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """HF's CLIPTokenizer on vocab.json/merges.txt written from our gz, byte table derived here."""
    folder = tmp_path_factory.mktemp("hf_clip_tokenizer")
    with gzip.open(VOCAB_FILE, "rt", encoding="utf-8") as handle:
        merges = handle.read().split("\n")[1:48895]
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [
        chr(256 + n) for n, b in enumerate(b for b in range(256) if b not in printable)
    ]
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return transformers.CLIPTokenizer.from_pretrained(str(folder))


def test_vocabulary_size_and_special_ids():
    tok = default_tokenizer()
    assert tok.vocab_size == 49408
    assert (tok.sot_id, tok.eot_id) == (49406, 49407)
    assert tokenize("a photo of a cat")[0, :8].tolist() == [
        49406, 320, 1125, 539, 320, 2368, 49407, 0,
    ]  # fmt: skip


def test_parity_with_hf_on_varied_strings(hf_tokenizer):
    """HF (transformers 5) normalises with NFC only, so both sides get our clean-up first: this checks
    the regex split, byte mapping and BPE merges independently."""
    tok = default_tokenizer()
    mismatches = []
    for text in varied_strings():
        ours = tok.encode(text)
        theirs = hf_tokenizer.encode(clean_text(text), add_special_tokens=False)
        if ours != theirs:
            mismatches.append((text, ours, theirs))
    assert not mismatches, mismatches[:3]


def test_raw_parity_with_hf_where_cleanup_agrees(hf_tokenizer):
    """On text that ftfy and HTML unescaping leave alone, raw input gives the same ids."""
    tok = default_tokenizer()
    for text in varied_strings(120):
        if "&" not in text:
            assert tok.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False), text


def test_truncation_matches_hf_and_keeps_end_token(hf_tokenizer):
    text = " ".join(random.Random(1).choices(WORDS, k=200))
    ids = hf_tokenizer(clean_text(text), truncation=True, max_length=77)["input_ids"]
    row = tokenize(text)[0]
    assert row.tolist() == ids
    assert row[-1].item() == 49407 and row[0].item() == 49406
    short = tokenize(text, context_length=10)[0].tolist()
    assert short == [*ids[:9], 49407]


def test_truncate_false_names_the_text():
    long_text = "cat " * 100
    with pytest.raises(VocabularyError, match=r"cat cat.*102 tokens.*context of 77"):
        tokenize(long_text, truncate=False)
    assert tokenize("cat " * 75, truncate=False).shape == (1, 77)  # exactly fits


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("fish &amp; chips", "fish & chips"),
        ("fish &amp;amp; chips", "fish & chips"),  # doubly escaped: unescaped twice
        ("&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>"),
        ("\u201cquoted\u201d", '"quoted"'),  # ftfy uncurls quotes
        ("\ufb01ne", "fine"),  # ftfy expands ligatures
        ("\uff21\uff22\uff23", "abc"),  # full-width letters
        ("sch\u00c3\u00b6n", "schön"),  # UTF-8 read as Latin-1 (mojibake)
        ("cafe\u0301", "café"),  # NFC composition
        ("  many\t\tspaces\n\nhere  ", "many spaces here"),
    ],
)
def test_cleanup(raw, plain):
    assert clean_text(raw) == plain
    assert torch.equal(tokenize(raw), tokenize(plain))


def test_shapes_padding_and_batch():
    out = tokenize(["a cat", "a very fluffy dog on a sofa"])
    assert out.dtype == torch.long and out.shape == (2, 77)
    eot = out.argmax(dim=-1)
    assert eot.tolist() == [3, 8]
    assert (out[0, 4:] == 0).all()
    assert tokenize("a cat").shape == (1, 77)


def test_decode_round_trip():
    tok = default_tokenizer()
    assert tok.decode(tokenize("A photo of a Cat")[0]) == "a photo of a cat"
    assert tok.decode(tok.encode("café 日本語 😀")) == "café 日本語 😀"


def test_empty_list_and_bad_context_are_errors():
    with pytest.raises(VocabularyError, match="at least one"):
        tokenize([])
    with pytest.raises(VocabularyError, match="context_length=1"):
        tokenize("cat", context_length=1)


def test_tokenizer_is_loaded_once():
    assert default_tokenizer() is default_tokenizer()
