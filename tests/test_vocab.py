"""Vocabulary parsing: classes, synonyms, files, and the mistakes users make."""

import pytest

from vocaseg.errors import VocabularyError
from vocaseg.text.vocab import Vocabulary


def test_parse_classes_and_synonyms():
    vocab = Vocabulary.parse("cat, sofa; couch , floor")
    assert vocab.class_names == ["cat", "sofa", "floor"]
    assert vocab.queries == ["cat", "sofa", "couch", "floor"]
    assert vocab.query_to_class == [0, 1, 1, 2]
    assert len(vocab) == 3


def test_from_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\nperson; human\n\nbicycle\n", encoding="utf-8")
    vocab = Vocabulary.from_file(path)
    assert vocab.classes == (("person", "human"), ("bicycle",))


def test_from_names_accepts_lists_and_seen():
    vocab = Vocabulary.from_names(["a", ["b", "c"], "d; e"], seen=[0, 2])
    assert vocab.classes == (("a",), ("b", "c"), ("d", "e"))
    assert vocab.seen == (0, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" , ,", "empty"),
        ("cat, dog, Cat", "appears twice"),
        ("cat, dog; cat", "appears twice"),
        ("cat, ; dog", "empty name"),
    ],
)
def test_bad_vocabularies(text, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.parse(text)


def test_bad_files_and_seen(tmp_path):
    with pytest.raises(VocabularyError, match="not found"):
        Vocabulary.from_file(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="names no classes"):
        Vocabulary.from_file(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00cat")
    with pytest.raises(VocabularyError, match="UTF-8"):
        Vocabulary.from_file(binary)
    with pytest.raises(VocabularyError, match="outside"):
        Vocabulary.from_names(["a", "b"], seen=[2])
