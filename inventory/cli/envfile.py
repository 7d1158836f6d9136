"""Environment files: ``NAME=value`` lines that ``inventory dev`` writes and every other
command reads with ``--env-file PATH`` (or ``INVENTORY_ENV_FILE=PATH``).

The values are quoted for a POSIX shell, so the same file also works with
``set -a; . ./.inventory-dev.env; set +a``. Lines starting with ``#`` are comments (dev
puts its banner there). Only ``INVENTORY_*`` names are taken: a file cannot change
``PATH`` or anything else of the process.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

#: The variable that names an environment file for any command.
ENV_FILE_VARIABLE = "INVENTORY_ENV_FILE"

_NAME = re.compile(r"INVENTORY_[A-Z0-9_]+")


class EnvFileError(ValueError):
    """The file cannot be read or a line is not ``INVENTORY_NAME=value``."""


def render(values: Mapping[str, str], comments: Iterable[str] = ()) -> str:
    """The file's text: ``# comment`` lines, then one ``NAME=value`` line per value."""
    lines = [f"# {line}".rstrip() for line in comments]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write(path: Path, values: Mapping[str, str], comments: Iterable[str] = ()) -> None:
    """Write the file readable by its owner only (it holds signing keys), atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(render(values, comments))
    os.replace(temporary, path)


def parse(text: str) -> dict[str, str]:
    """The ``INVENTORY_*`` values of a file's text (EnvFileError on a bad line)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, rest = line.removeprefix("export ").partition("=")
        if not equals or not _NAME.fullmatch(name):
            raise EnvFileError(f"line {number}: not INVENTORY_NAME=value")
        try:
            words = shlex.split(rest, comments=False, posix=True)
        except ValueError as error:
            raise EnvFileError(f"line {number} ({name}): {error}") from None
        if len(words) > 1:
            raise EnvFileError(f"line {number} ({name}): quote a value that has spaces")
        values[name] = words[0] if words else ""
    return values


def load(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise EnvFileError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return parse(text)
    except EnvFileError as error:
        raise EnvFileError(f"{path}: {error}") from None


def apply(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Load ``path`` into ``environ`` (``os.environ`` by default); the file's values win
    over variables already set, since naming the file is the explicit choice."""
    values = load(path)
    target = os.environ if environ is None else environ
    target.update(values)
    return values
