"""Migrations: applied once, in order, concurrently safe, refused when history changed."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from inventory.devtools.servers import free_port
from inventory.record.errors import DatabaseUnavailableError, MigrationChecksumError, MigrationError
from inventory.record.migrate import (
    Migration,
    applied_migrations,
    checksum_of,
    load_migrations,
    migrate,
    migrate_database,
    pending_migrations,
)
from inventory.record.pool import connect
from tests.conftest import ServerHandle
from tests.databases import scratch_database

REPO = Path(__file__).resolve().parents[2]

EXPECTED_TABLES = {
    "hospitals",
    "departments",
    "doctors",
    "schedules",
    "slots",
    "patients",
    "account_patients",
    "patient_bans",
    "holds",
    "bookings",
    "booking_status_history",
    "payments",
    "refunds",
    "inventory_events",
    "tag_sequences",
    "dead_letters",
    "idempotency_keys",
    "schema_migrations",
}


def extra_migration(version: int, sql: str, name: str = "extra") -> Migration:
    """A migration that is not in the package, for tests of history checks."""
    return Migration(version=version, name=name, sql=sql, checksum=checksum_of(sql))


@pytest.fixture(scope="module")
async def migrated_url(postgres_server: ServerHandle) -> AsyncIterator[str]:
    """A database migrated here by the runner itself, not copied from the session's
    template: this module tests the migrations."""
    async with scratch_database(postgres_server.url) as url:
        await migrate_database(url)
        yield url


async def tables(connection: asyncpg.Connection) -> set[str]:
    """The names of the tables in the current schema."""
    rows = await connection.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    return {row["tablename"] for row in rows}


async def test_migrate_applies_every_migration_in_order(postgres_server: ServerHandle) -> None:
    """A fresh database gets every packaged migration, recorded with name and checksum."""
    packaged = load_migrations()
    assert [m.version for m in packaged] == list(range(1, len(packaged) + 1))
    async with scratch_database(postgres_server.url) as url:
        applied = await migrate_database(url)
        assert applied == list(packaged)
        connection = await connect(url)
        try:
            rows = await applied_migrations(connection)
            assert [(r.version, r.name, r.checksum) for r in rows] == [
                (m.version, m.name, m.checksum) for m in packaged
            ]
            assert await tables(connection) >= EXPECTED_TABLES
            assert await pending_migrations(connection) == []
        finally:
            await connection.close()


async def test_second_run_applies_nothing(migrated_url: str) -> None:
    """Running migrate on an up-to-date database applies nothing and changes nothing."""
    connection = await connect(migrated_url)
    try:
        before = await applied_migrations(connection)
        assert await migrate(connection) == []
        assert await applied_migrations(connection) == before
    finally:
        await connection.close()


async def test_concurrent_runs_apply_each_migration_once(postgres_server: ServerHandle) -> None:
    """Two migrate runs at once take turns: every migration is applied by exactly one."""
    async with scratch_database(postgres_server.url) as url:
        first, second = await asyncio.gather(migrate_database(url), migrate_database(url))
        versions = [m.version for m in first + second]
        assert sorted(versions) == [m.version for m in load_migrations()]
        connection = await connect(url)
        try:
            count = await connection.fetchval("SELECT count(*) FROM schema_migrations")
            assert count == len(load_migrations())
        finally:
            await connection.close()


async def test_changed_checksum_is_refused_before_applying_anything(
    postgres_server: ServerHandle,
) -> None:
    """An edited, already-applied migration stops the run, naming the file; nothing new runs."""
    packaged = load_migrations()
    async with scratch_database(postgres_server.url) as url:
        await migrate_database(url)
        edited_sql = packaged[0].sql + "\n-- an innocent-looking edit\n"
        edited = dataclasses.replace(packaged[0], sql=edited_sql, checksum=checksum_of(edited_sql))
        later = extra_migration(len(packaged) + 1, "CREATE TABLE never_created (id int)")
        with pytest.raises(MigrationChecksumError, match=packaged[0].filename) as caught:
            await migrate_database(url, migrations=[edited, *packaged[1:], later])
        assert caught.value.code == "migration_checksum_mismatch"
        connection = await connect(url)
        try:
            assert "never_created" not in await tables(connection)
            with pytest.raises(MigrationChecksumError):
                await pending_migrations(connection, [edited, *packaged[1:]])
        finally:
            await connection.close()


async def test_history_the_package_does_not_know_is_refused(
    postgres_server: ServerHandle,
) -> None:
    """A database migrated by a newer release, or a new file sorted before applied ones, stops."""
    packaged = load_migrations()
    newer = extra_migration(len(packaged) + 2, "CREATE TABLE from_the_future (id int)")
    async with scratch_database(postgres_server.url) as url:
        await migrate_database(url, migrations=[*packaged, newer])
        with pytest.raises(MigrationError, match="does not ship"):
            await migrate_database(url)
        squeezed = extra_migration(len(packaged) + 1, "CREATE TABLE squeezed (id int)")
        with pytest.raises(MigrationError, match="sorts before"):
            await migrate_database(url, migrations=[*packaged, squeezed, newer])


async def test_failed_migration_is_rolled_back_and_retried_next_run(
    postgres_server: ServerHandle,
) -> None:
    """A migration that fails leaves no trace; earlier ones stay; a fixed file applies."""
    packaged = load_migrations()
    version = len(packaged) + 1
    broken = extra_migration(version, "CREATE TABLE half_done (id int);\nSELECT 1 / 0;")
    async with scratch_database(postgres_server.url) as url:
        with pytest.raises(MigrationError, match=rf"{re.escape(broken.filename)} failed"):
            await migrate_database(url, migrations=[*packaged, broken])
        connection = await connect(url)
        try:
            assert "half_done" not in await tables(connection)
            applied = [row.version for row in await applied_migrations(connection)]
            assert applied == [m.version for m in packaged]
        finally:
            await connection.close()
        fixed = extra_migration(version, "CREATE TABLE half_done (id int);")
        assert await migrate_database(url, migrations=[*packaged, fixed]) == [fixed]


def test_load_migrations_refuses_misnamed_and_duplicate_files(tmp_path: Path) -> None:
    """A .sql file the runner would skip, or two files of one version, is an error."""
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "README.txt").write_text("not a migration")
    assert [m.name for m in load_migrations(tmp_path)] == ["first"]
    (tmp_path / "2_second.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match=r"2_second\.sql"):
        load_migrations(tmp_path)
    (tmp_path / "2_second.sql").unlink()
    (tmp_path / "0001_again.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="share a version"):
        load_migrations(tmp_path)


def test_checksum_reads_crlf_as_lf() -> None:
    """A checkout with Windows line endings does not look like an edited migration."""
    assert checksum_of("CREATE TABLE t (id int);\r\n") == checksum_of("CREATE TABLE t (id int);\n")
    assert checksum_of("SELECT 1;") != checksum_of("SELECT 2;")


async def test_unreachable_database_is_database_unavailable() -> None:
    """Nobody listening on the port: DatabaseUnavailableError (503), caused by the OS error."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(DatabaseUnavailableError) as caught:
        await migrate_database(url, connect_timeout_s=2)
    assert caught.value.code == "database_unavailable"
    assert caught.value.http_status == 503
    assert isinstance(caught.value.__cause__, OSError)


def test_wheel_ships_migrations_and_queries(tmp_path: Path) -> None:
    """The built wheel contains the migrations and queries, and finds them once installed."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("slot_inventory-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for migration in load_migrations():
        assert f"inventory/record/migrations/{migration.filename}" in names
    assert "inventory/record/queries.sql" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import inventory.record.migrate as m, inventory.record.queries as q; "
        "print(m.__file__); print(len(m.load_migrations())); print(len(q.QUERIES))"
    )
    found = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(target)], check=True, capture_output=True, text=True
    )
    module_file, count, queries = found.stdout.split()
    assert module_file.startswith(str(target))
    assert int(count) == len(load_migrations())
    assert int(queries) > 0
