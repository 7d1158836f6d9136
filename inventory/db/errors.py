"""Errors of the Postgres adapter.

Driver errors are wrapped here, at the adapter boundary (``raise ... from``), so callers
switch on stable codes and never on asyncpg's exception classes.
"""

from __future__ import annotations

from inventory.errors import InventoryError


class DatabaseUnavailableError(InventoryError):
    """Postgres could not be reached or answered in time; the work may not have happened.

    A confirm that meets it answers 503: the booking is not yet durable, and a retry with
    the same Idempotency-Key finishes it (docs/durability.md).
    """

    code = "database_unavailable"
    http_status = 503
    title = "The database is unavailable; retry shortly with the same Idempotency-Key"


class MigrationError(InventoryError):
    """The schema cannot be brought up to date; ``inventory migrate`` says why."""

    code = "migration_failed"
    title = "The database schema could not be migrated"


class MigrationChecksumError(MigrationError):
    """An applied migration's file changed since it was applied.

    Applied migrations are history: a change must be a new migration, never an edit.
    """

    code = "migration_checksum_mismatch"
    title = "An applied migration was edited after it was applied"


class QueryLoadError(RuntimeError):
    """A named-query file is malformed (a packaging or programming error, found at import)."""
