"""The HTTP layer sits on top: nothing below it imports ``inventory.api``.

The booking use cases, the store, the record and the rest are what the API calls; if
one of them imported the API (its pydantic models, its context), a change of the HTTP
contract would reach the durable record, and the worker would load the web stack."""

from __future__ import annotations

import ast
from pathlib import Path

import inventory

PACKAGE = Path(inventory.__file__).parent
#: Packages and modules below the API.
BELOW_API = (
    "booking",
    "record",
    "store",
    "ops",
    "his",
    "payments",
    "privacy",
    "capacity",
    "domain.py",
    "errors.py",
    "worker.py",
)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def below_api_files() -> list[Path]:
    files: list[Path] = []
    for name in BELOW_API:
        path = PACKAGE / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_nothing_below_the_api_imports_it() -> None:
    files = below_api_files()
    assert len(files) > 30, files  # the walk found the packages
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m
            for m in imported_modules(path)
            if m == "inventory.api" or m.startswith("inventory.api.")
        )
        for path in files
    }
    assert {path: found for path, found in offenders.items() if found} == {}
