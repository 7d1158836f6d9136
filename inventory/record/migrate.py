"""Versioned plain-SQL migrations: find them, check what was applied, apply the rest.

Migrations are the files ``inventory/record/migrations/NNNN_name.sql`` inside the package, found
with importlib.resources, so they ship in the wheel. Each is applied in its own transaction
together with its row in ``schema_migrations(version, name, checksum, applied_at)``: a
migration that fails leaves nothing behind and is tried again on the next run.

Safe to run twice and concurrently: a session-level advisory lock serialises runs (the
second waits, then finds nothing to do). Applied migrations are history: if a file's
checksum (SHA-256 of its text, line endings normalised) no longer matches what was applied,
or the database has a migration this package does not know, or a new migration sorts
before one already applied, nothing is applied and the error says which file.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final

from asyncpg import exceptions as pg_errors  # type: ignore[import-untyped]

from inventory.record.errors import MigrationChecksumError, MigrationError
from inventory.record.pool import UNAVAILABLE_ERRORS, connect, database_errors

__all__ = [
    "ADVISORY_LOCK_KEY",
    "AppliedMigration",
    "Migration",
    "applied_migrations",
    "checksum_of",
    "load_migrations",
    "migrate",
    "migrate_database",
    "migrations_root",
    "pending_migrations",
]

ADVISORY_LOCK_KEY: Final = int.from_bytes(b"inv-migr", "big")
"""The pg_advisory_lock key that serialises migration runs on one database."""

_FILE_RE: Final = re.compile(r"^(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_SCHEMA_MIGRATIONS: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``NNNN_name.sql``."""

    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        """The file's name, e.g. ``0001_catalogue.sql``."""
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def checksum_of(sql: str) -> str:
    """SHA-256 (hex) of a migration's text, with CRLF line endings read as LF."""
    return hashlib.sha256(sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def migrations_root() -> Traversable:
    """The folder of the packaged migrations (inside the wheel or the source tree)."""
    return files("inventory.record") / "migrations"


def load_migrations(root: Traversable | None = None) -> tuple[Migration, ...]:
    """Every ``NNNN_name.sql`` under ``root`` (default: the packaged ones), by version.

    Any other ``.sql`` file, or two files with one version, is a MigrationError: a file the
    runner would skip silently is a migration that never runs.
    """
    folder = migrations_root() if root is None else root
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_RE.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match["version"])
        if version == 0:
            raise MigrationError(f"migration file {entry.name!r}: versions start at 0001")
        if version in found:
            raise MigrationError(
                f"migrations {found[version].filename!r} and {entry.name!r} share a version"
            )
        sql = entry.read_text(encoding="utf-8")
        found[version] = Migration(version, match["name"], sql, checksum_of(sql))
    return tuple(found[version] for version in sorted(found))


async def applied_migrations(connection: Any) -> list[AppliedMigration]:
    """The rows of ``schema_migrations`` by version; empty if the table does not exist."""
    with database_errors():
        exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return []
        rows = await connection.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
    return [AppliedMigration(**dict(row)) for row in rows]


def _check_history(
    applied: Sequence[AppliedMigration], migrations: Sequence[Migration]
) -> list[Migration]:
    """The migrations still to apply, after checking the applied ones against the files."""
    known = {migration.version: migration for migration in migrations}
    for row in applied:
        migration = known.get(row.version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {row.version:04d}_{row.name}, which this version "
                "of slot-inventory does not ship: run a newer release's migrate, or restore "
                "the file"
            )
        if migration.checksum != row.checksum:
            raise MigrationChecksumError(
                f"migration {migration.filename} changed after it was applied "
                f"(applied {row.checksum[:12]}, file {migration.checksum[:12]}): restore the "
                "file and put the change in a new migration"
            )
    done = {row.version for row in applied}
    latest = max(done, default=0)
    pending = [migration for migration in migrations if migration.version not in done]
    for migration in pending:
        if migration.version < latest:
            raise MigrationError(
                f"migration {migration.filename} sorts before {latest:04d}, which is already "
                "applied: give it a version after the latest"
            )
    return pending


async def pending_migrations(
    connection: Any, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """The migrations not yet applied, after checking the applied ones (read-only, no lock).

    For start-up and readiness checks: raises MigrationChecksumError or MigrationError if
    the database's history does not match the packaged files.
    """
    chosen = load_migrations() if migrations is None else tuple(migrations)
    return _check_history(await applied_migrations(connection), chosen)


@contextlib.asynccontextmanager
async def _migration_lock(connection: Any) -> AsyncIterator[None]:
    await connection.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        yield
    finally:
        # A lost connection released the lock with the session; nothing to undo then.
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            await connection.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def migrate(
    connection: Any, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Apply every pending migration in version order; return the ones applied now.

    Each migration runs in its own transaction with its ``schema_migrations`` row. Raises
    MigrationChecksumError / MigrationError (before applying anything) if the history does
    not match, MigrationError if a migration's SQL fails (earlier ones stay applied), and
    DatabaseUnavailableError if Postgres goes away.
    """
    chosen = load_migrations() if migrations is None else tuple(migrations)
    applied_now: list[Migration] = []
    with database_errors():
        async with _migration_lock(connection):
            await connection.execute(_CREATE_SCHEMA_MIGRATIONS)
            pending = _check_history(await applied_migrations(connection), chosen)
            for migration in pending:
                try:
                    async with connection.transaction():
                        await connection.execute(migration.sql)
                        await connection.execute(
                            "INSERT INTO schema_migrations (version, name, checksum)"
                            " VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except UNAVAILABLE_ERRORS:
                    raise
                except (pg_errors.PostgresError, pg_errors.InterfaceError) as error:
                    raise MigrationError(
                        f"migration {migration.filename} failed and was rolled back: "
                        f"{type(error).__name__}: {error}"
                    ) from error
                applied_now.append(migration)
    return applied_now


async def migrate_database(
    dsn: str, *, connect_timeout_s: float = 10.0, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Connect to ``dsn``, apply the pending migrations, close; return the ones applied.

    Raises DatabaseUnavailableError when Postgres cannot be reached.
    """
    connection = await connect(
        dsn,
        command_timeout_s=None,  # a migration may build an index for minutes
        connect_timeout_s=connect_timeout_s,
        application_name="slot-inventory migrate",
    )
    try:
        return await migrate(connection, migrations)
    finally:
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            await connection.close(timeout=5)
