"""Imports flow one way (STYLE.md, module boundaries); this test keeps them so."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "strongroom"


def imports_of(path: Path) -> set[str]:
    """Return every module name a source file imports (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def modules_in(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "strongroom" and len(parts) > 1 else None


@pytest.mark.parametrize("path", modules_in("confine"), ids=lambda p: p.name)
def test_confine_uses_only_the_standard_library_and_the_error_tree(
    path: Path,
) -> None:
    outside = {
        name for name in imports_of(path)
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] != "__future__"
        and not name.startswith(("strongroom.confine", "strongroom.errors"))
    }

    assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("storage", {"api", "cli", "auth"}),
        ("auth", {"api", "cli", "storage", "confine"}),
        ("confine", {"api", "cli", "auth", "storage", "config"}),
    ],
)
def test_lower_layers_never_import_higher_ones(layer: str, forbidden: set[str]) -> None:
    crossings = {
        f"{path.name} -> {name}"
        for path in modules_in(layer)
        for name in imports_of(path)
        if layer_of(name) in forbidden
    }

    assert not crossings, sorted(crossings)


def test_nothing_outside_the_api_imports_the_api_or_the_cli() -> None:
    crossings = {
        f"{path.relative_to(PACKAGE)} -> {name}"
        for path in PACKAGE.rglob("*.py")
        # cli.py, and __main__.py, its door for `python -m strongroom`.
        if path.parent.name != "api" and path.name not in ("cli.py", "__main__.py")
        for name in imports_of(path)
        if layer_of(name) == "cli" or (layer_of(name) == "api")
    }

    assert not crossings, sorted(crossings)
