"""The project's promises about itself: the README's commands and CI agree, the
command line is whole, and the README's configuration table names every setting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from inventory.cli import COMMAND_MODULES, build_parser
from inventory.ops import gc_tuning
from inventory.ops.config import Settings

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_readme_gives_the_two_commands() -> None:
    """README names one command that runs the service and one that runs the tests."""
    run, test = readme_commands()
    assert run.endswith("inventory dev")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run runs exactly the README's test command, plus lint and type checks."""
    _, test = readme_commands()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines()
    for check in ("ruff check", "ruff format --check", "mypy --strict inventory"):
        assert check in ci


def test_ci_runs_the_server_dependent_tests_on_the_pip_shipped_servers() -> None:
    """.ci/run also runs the tests whose outcome depends on the Redis and Postgres servers
    with INVENTORY_SERVERS=pip, so a fallback server that breaks them (as Redis 6.2 broke
    the backlog and the persister tests) fails CI even where the system has its own."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = ci.split("INVENTORY_SERVERS=pip .venv/bin/pytest", 1)[1].split("\n\n", 1)[0]
    for target in ("tests/durability", "tests/test_backlog.py", "tests/test_servers.py"):
        assert target in command
    for target in ("tests/lua", "tests/his/test_dev.py", "tests/test_redis_version.py"):
        assert target in command
    for target in command.replace("\\", " ").split():
        if target.startswith("tests/"):
            assert (REPO / target).exists(), target


def test_every_cli_command_registers() -> None:
    """Each command module adds a subcommand with a handler."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    # Each module adds at least one command (durable adds rebuild and check).
    assert len(commands) >= len(COMMAND_MODULES)
    for name in ("dev", "serve", "worker", "migrate", "rebuild", "check", "token"):
        assert name in commands
    for name, sub in commands.items():
        # A command either runs itself or has subcommands that do (bench reserve, ...).
        assert sub.get_default("handler") is not None or sub._subparsers is not None, name


class _RecordingEnv(dict[str, str]):
    """An empty environment that records every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def readme_settings() -> set[str]:
    """The INVENTORY_* variables named in README's configuration table; ``..._X`` after
    ``INVENTORY_WORD_...`` in the same cell stands for ``INVENTORY_WORD_X``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration (environment)", 1)[1].split("\n#", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split("|")[1]
        first, *rest = re.findall(r"`([A-Z0-9_.]+)`", cell)
        names.add(first)
        family = "_".join(first.split("_")[:2])
        names |= {name if name.startswith("INVENTORY_") else family + name[3:] for name in rest}
    return {name for name in names if name.startswith("INVENTORY_")}


def test_readme_documents_every_setting() -> None:
    """Every INVENTORY_* variable the configuration reads has a row in README's table,
    and the table names no variable that is not read."""
    env = _RecordingEnv()
    Settings.from_env(env, for_api=False)
    assert env.asked, "the configuration read nothing"
    documented = readme_settings()
    assert env.asked - documented == set(), "undocumented settings"
    assert documented - env.asked == set(), "documented but never read"


def test_serve_tunes_the_garbage_collector() -> None:
    """What an API process does after start-up (in a fresh interpreter, so this test's
    own collector is untouched): start-up's objects frozen, young collections rarer."""
    program = (
        "import gc; from inventory.ops import gc_tuning; "
        "before = gc.get_threshold(); gc_tuning.tune_garbage_collector(); "
        "print(gc.get_freeze_count(), *before, *gc.get_threshold())"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    frozen, young, middle, old, *after = (int(v) for v in done.stdout.split())
    assert frozen > 1000
    assert after == [gc_tuning.GC_YOUNG_THRESHOLD, middle, old]
    assert young < gc_tuning.GC_YOUNG_THRESHOLD
