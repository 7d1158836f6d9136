"""Errors of the Postgres adapter.

Driver errors are wrapped here, at the adapter boundary (``raise ... from``), so callers
switch on stable codes and never on asyncpg's exception classes.
"""

from __future__ import annotations

from inventory.errors import InventoryError, OverloadedError


class DatabaseUnavailableError(InventoryError):
    """Postgres could not be reached or answered in time; the work may not have happened.

    A confirm that meets it answers 503: the booking is not yet durable, and a retry with
    the same Idempotency-Key finishes it (docs/durability.md).
    """

    code = "database_unavailable"
    http_status = 503
    title = "The database is unavailable; retry shortly with the same Idempotency-Key"


class DatabaseBusyError(OverloadedError):
    """Every pooled connection stayed in use for the whole wait (or the event loop was
    too busy to hand one over) while Postgres answers: the process is at capacity, not
    the database down, so the answer is 503 ``overloaded`` (with Retry-After), which
    points an operator to load, not to the Postgres runbook."""


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
