"""The HTTP layer sits on top: nothing below it imports ``inventory.api``.

The booking use cases, the store, the record and the rest are what the API calls; if
one of them imported the API (its pydantic models, its context), a change of the HTTP
contract would reach the durable record, and the worker would load the web stack."""

from __future__ import annotations

import re
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
    "recovery",
    "domain.py",
    "errors.py",
    "worker.py",
)


#: An import of the API, at any depth (function-level imports included). A text match
#: rather than ast.parse: CPython 3.11's parser can fail ("AST constructor recursion
#: depth mismatch") when called late in a long test session.
API_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+inventory\.api\b|import[ \t]+inventory\.api\b"
    r"|from[ \t]+inventory[ \t]+import[^\n]*\bapi\b)",
    re.MULTILINE,
)


def api_imports(path: Path) -> list[str]:
    """The lines of ``path`` that import the API."""
    return [m.group(0).strip() for m in API_IMPORT.finditer(path.read_text(encoding="utf-8"))]


def below_api_files() -> list[Path]:
    files: list[Path] = []
    for name in BELOW_API:
        path = PACKAGE / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_nothing_below_the_api_imports_it() -> None:
    files = below_api_files()
    assert len(files) > 30, files  # the walk found the packages
    offenders = {str(path.relative_to(PACKAGE)): api_imports(path) for path in files}
    assert {path: found for path, found in offenders.items() if found} == {}
