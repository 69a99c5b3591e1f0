"""The package's layering, read from the import statements (AST): a module imports only from its
own layer or those below it, so ``clip`` never needs ``models``, ``models`` never needs
``inference`` or ``engine``, and ``data`` never needs ``models`` (docs/contract.md, "Layers").
Imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vocaseg"

#: Bottom to top; a module may import from its own layer and every layer below.
LAYERS = [
    {"errors", "io", "config", "constants", "hashing", "dist", "device"},
    {"clip"},
    {"text"},
    {"scoring", "background", "metrics", "fonts", "viz"},
    {"data", "losses"},
    {"models"},
    {"inference", "export", "bench"},
    {"engine"},
    {"demo", "cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _unit(path: Path) -> str:
    """The top-level unit a file belongs to: ``models`` for models/base.py, ``io`` for io.py."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, top-level vocaseg unit) of every runtime import in ``tree``."""
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for sub in node.body for child in ast.walk(sub))
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "vocaseg":
                names = [f"vocaseg.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vocaseg" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _modules() -> list[Path]:
    return sorted(
        p
        for p in SRC.rglob("*.py")
        if p.relative_to(SRC).parts[0] not in ("__init__.py", "__main__.py")
    )


def test_every_unit_has_a_layer():
    units = {_unit(path) for path in _modules()}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to LAYERS"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_goes_up_the_layers(path):
    unit = _unit(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    upward = [
        f"line {line}: {unit} (layer {RANK[unit]}) imports {target} (layer {RANK[target]})"
        for line, target in _imports(tree)
        if target in RANK and RANK[target] > RANK[unit]
    ]
    assert not upward, "; ".join(upward)
