"""The repository stands alone: code, configs and tests cite papers, official repositories and pages
under ``docs/``, never the design notes kept outside the repository (a ``specs`` folder), and every
``docs/*.md`` page they cite exists, with the numbered section a ``§N`` citation names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src", "configs", "tests")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".ini", ".json"}

# Citations of notes that are not part of the repository ("specs" + "/", "spec" + " §", ...),
# spelled so that a grep for those citations does not find this file.
OUTSIDE = re.compile(r"\bspec(?:s/|\s*§)|\bdatasets\s+spec\b", re.IGNORECASE)
# A docs page, optionally followed by the first section it cites: "docs/datasets.md §2.3".
DOCS_CITATION = re.compile(r"docs/([\w./-]+?\.md)(?:\s+§(\d+(?:\.\d+)*))?")


def _scanned_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
                continue
            if path.resolve() == Path(__file__).resolve():
                continue
            files.append(path)
    return files


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _headings(page: Path) -> set[str]:
    """Numbers of a page's numbered headings: "## 4. Where" -> "4", "### 4.1 Hub" -> "4.1"."""
    numbers = re.findall(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", _text(page), flags=re.MULTILINE)
    return set(numbers)


def test_the_scan_finds_the_repository_files():
    files = {p.relative_to(ROOT).as_posix() for p in _scanned_files()}
    assert "src/vocaseg/metrics.py" in files
    assert any(name.startswith("configs/") for name in files)
    assert "tests/test_docs.py" not in files


def test_nothing_cites_notes_outside_the_repository():
    found = []
    for path in _scanned_files():
        text = _text(path)
        for match in OUTSIDE.finditer(text):
            found.append(f"{path.relative_to(ROOT)}:{_line_of(text, match.start())}: {match[0]}")
    assert not found, (
        "cite the paper and section, the official repository or a docs/ page instead of:\n"
        + "\n".join(found)
    )


def _citations() -> list[tuple[str, str, str | None]]:
    """(where, page, section or None) for every docs/*.md citation in the scanned files."""
    cited = []
    for path in _scanned_files():
        text = _text(path)
        for match in DOCS_CITATION.finditer(text):
            where = f"{path.relative_to(ROOT)}:{_line_of(text, match.start())}"
            cited.append((where, match[1].rstrip("."), match[2]))
    return cited


def test_code_configs_and_tests_cite_the_docs_pages():
    pages = {page for _, page, _ in _citations()}
    assert {"clip-weights.md", "datasets.md", "methods/maskclip.md", "methods/tagclip.md"} <= pages


def test_every_cited_docs_page_exists():
    missing = [
        f"{where}: docs/{page}"
        for where, page, _ in _citations()
        if not (ROOT / "docs" / page).is_file()
    ]
    assert not missing, "cited docs pages that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("see docs/datasets.md §2.3 for the table", [("datasets.md", "2.3")]),
        ("(docs/methods/tagclip.md §8):", [("methods/tagclip.md", "8")]),
        ("docs/protocols.md.", [("protocols.md", None)]),
        ("(docs/methods/maskclip.md\n    §2, step 4)", [("methods/maskclip.md", "2")]),
    ],
)
def test_citation_pattern(text, expected):
    assert [(m[1], m[2]) for m in DOCS_CITATION.finditer(text)] == expected


def test_outside_pattern_ignores_ordinary_words():
    assert OUTSIDE.search("spectacles, specs, eyeglasses") is None
    assert OUTSIDE.search("a DatasetSpec for spec in SPECS") is None
    assert OUTSIDE.search("(spec" + " §2.3)") and OUTSIDE.search("spec" + "s/tagclip.md")
    assert OUTSIDE.search("Spec" + " §3:") and OUTSIDE.search("the datasets" + " spec")


def test_every_cited_section_exists():
    wrong = []
    headings: dict[str, set[str]] = {}
    for where, page, section in _citations():
        path = ROOT / "docs" / page
        if section is None or not path.is_file():
            continue
        if page not in headings:
            headings[page] = _headings(path)
        if section not in headings[page]:
            wrong.append(f"{where}: docs/{page} §{section}")
    assert not wrong, "cited sections with no numbered heading on the page:\n" + "\n".join(wrong)
