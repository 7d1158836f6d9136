"""`inventory migrate`: applies, reports, and fails clearly without a database."""

from __future__ import annotations

import asyncio
import sys

import pytest

from inventory.cli import main
from inventory.cli.migrate import redact
from inventory.devtools.servers import free_port
from inventory.record.migrate import load_migrations
from tests.conftest import ServerHandle
from tests.databases import scratch_database


async def run_command(*args: str) -> tuple[int, str, str]:
    """Run ``python -m inventory <args>``; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inventory",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_migrate_command_applies_then_reports_up_to_date(
    postgres_server: ServerHandle,
) -> None:
    """The first run prints every migration it applied; the second says there is nothing."""
    async with scratch_database(postgres_server.url) as url:
        status, out, err = await run_command("migrate", "--database-url", url)
        assert status == 0, err
        assert out.splitlines() == [f"applied {m.filename}" for m in load_migrations()]
        status, out, err = await run_command("migrate", "--database-url", url)
        assert status == 0, err
        assert "nothing to apply" in out


def test_migrate_command_reads_the_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --database-url the command uses $INVENTORY_DATABASE_URL."""
    port = free_port()
    monkeypatch.setenv("INVENTORY_DATABASE_URL", f"postgresql://env-user@127.0.0.1:{port}/db")
    assert main(["migrate", "--connect-timeout", "2"]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_unreachable_database_exits_1_with_a_clear_message_and_no_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening: exit 1, 'cannot reach the database', the password masked."""
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/inventory"
    assert main(["migrate", "--database-url", url, "--connect-timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "inventory migrate: cannot reach the database" in err
    assert "s3cret" not in err
    assert "app:***@" in err


def test_missing_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No flag and no environment variable: exit 2 and say how to give the URL."""
    monkeypatch.delenv("INVENTORY_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 2
    assert "INVENTORY_DATABASE_URL" in capsys.readouterr().err


def test_invalid_url_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL asyncpg cannot parse is reported as such, not as a traceback."""
    assert main(["migrate", "--database-url", "mysql://somewhere/db"]) == 1
    assert "invalid database URL" in capsys.readouterr().err


def test_redact_hides_only_the_password() -> None:
    """Messages keep user, host, port and database but never the password."""
    assert redact("postgresql://u:pw@h:5432/d?sslmode=require") == (
        "postgresql://u:***@h:5432/d?sslmode=require"
    )
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
