"""The documentation stands alone: README.md and every file under docs/, deploy/ and
loadtest/ refers only to files in the repository (relative links resolve, paths of the
repository's files exist) and never to material outside it (a design note or research
kept elsewhere, a path of the machine it was written on)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Where the documentation lives; source files of the package are checked by review.
DOC_ROOTS = ("docs", "deploy", "loadtest")
DOC_SUFFIXES = frozenset({".md", ".yml", ".yaml", ".json", ".py", ".txt", ".toml"})
#: Top-level folders of the repository a doc may name files in.
REPO_DIRS = ("inventory", "bench", "tests", "docs", "deploy", "lua", "loadtest")

#: Material that is not in the repository, and paths of a machine.
FORBIDDEN = (
    ("DESIGN.md", re.compile(r"\bDESIGN\.md\b")),
    ("../shared", re.compile(r"\.\./shared\b")),
    ("research notes", re.compile(r"\bresearch/|perf-baselines")),
    ("a home or work folder", re.compile(r"(?<![\w.])/(?:work|root|home|Users)/")),
    ("internal work", re.compile(r"\bother (?:work|engineers?)\b", re.IGNORECASE)),
)
#: A Markdown link or image: ``[text](target)``.
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
#: A path of a repository file, named in the text.
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:" + "|".join(REPO_DIRS) + r")/[\w./-]*\.(?:md|py|lua|sql|yml|yaml|json))\b"
)


def doc_files() -> list[Path]:
    """README.md and every text file under the documentation folders."""
    files = [REPO / "README.md"]
    for root in DOC_ROOTS:
        files += sorted(
            path
            for path in (REPO / root).rglob("*")
            if path.is_file()
            and path.suffix in DOC_SUFFIXES
            and "__pycache__" not in path.parts
            and not path.name.startswith(".")
        )
    return files


def relative(path: Path) -> str:
    """``path`` as the repository names it."""
    return path.relative_to(REPO).as_posix()


def outside_references(path: Path, text: str | None = None) -> list[str]:
    """What ``path`` (or ``text``, as if it were at ``path``) cites that is not in the
    repository, one line each."""
    if text is None:
        text = path.read_text(encoding="utf-8")
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in FORBIDDEN:
            if pattern.search(line):
                found.append(f"{relative(path)}:{number}: {what}: {line.strip()}")
        if path.suffix == ".md":
            for target in LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue  # a URL or an anchor on the same page
                if target.startswith("/"):
                    found.append(f"{relative(path)}:{number}: absolute link {target}")
                    continue
                resolved = (path.parent / target.split("#", 1)[0]).resolve()
                if not resolved.is_relative_to(REPO) or not resolved.exists():
                    found.append(f"{relative(path)}:{number}: broken link {target}")
        for named in REPO_PATH.findall(line):
            if "NNNN" not in named and not (REPO / named).exists():  # NNNN: a pattern
                found.append(f"{relative(path)}:{number}: no such file {named}")
    return found


def test_docs_cite_only_the_repository() -> None:
    """No doc names a file outside the repository, a machine's path or internal work,
    every relative link resolves inside the repository, and every repository path a doc
    names exists."""
    files = doc_files()
    assert len(files) > 10
    found = [line for path in files for line in outside_references(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see ../shared/DESIGN.md", 2),
        ("as measured (/work/shared/research/perf-baselines.md)", 2),
        ("in `/root/clone`", 1),
        ("views other work is changing", 1),
        ("[runbook](runbooks-missing.md)", 1),
        ("[up](../../outside.md)", 1),
        ("[abs](/etc/passwd)", 1),
        ("`inventory/no_such_module.py`", 1),
        ("[ok](metrics.md#labels), [web](https://example.org/x.md), `inventory/ops/metrics.py`", 0),
    ],
)
def test_the_check_finds_each_kind_of_outside_reference(text: str, expected: int) -> None:
    """The check itself flags each kind of reference it is for, and passes good ones."""
    found = outside_references(REPO / "docs" / "probe.md", text)
    assert len(found) == expected, found
