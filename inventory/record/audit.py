"""The operator audit log in Postgres (``operator_audit``, docs/schema.md): one entry per
operator action, append-only (the table's triggers refuse a delete or a change of a
completed entry).

When an entry is written and what it holds are the API's rules (the wrapper of the
operator routes, inventory/api/audit.py); this module only names the queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

ACQUIRE_TIMEOUT_S: Final = 5.0
#: The columns of an entry, in the order an export lists them.
COLUMNS: Final = (
    "id",
    "at",
    "actor",
    "role",
    "scope",
    "hospital_id",
    "method",
    "route",
    "object",
    "request_id",
    "status",
    "before",
    "after",
    "finished_at",
)


@dataclass(frozen=True, slots=True)
class AuditStart:
    """Who is about to do what: the first half of an entry."""

    actor: str
    role: str
    scope: list[str] | None
    method: str
    route: str
    object: dict[str, str]
    request_id: str


async def begin(pool: Any, start: AuditStart) -> int:
    """Write the entry of an action about to run; its id."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        row = await connection.fetchrow(
            QUERIES["begin_operator_audit"],
            start.actor,
            start.role,
            start.scope,
            start.method,
            start.route,
            start.object,
            start.request_id,
        )
    return int(row["id"])


async def finish(
    pool: Any,
    entry_id: int,
    *,
    status: int,
    hospital_id: str | None,
    before: Any,
    after: Any,
) -> bool:
    """Complete an entry with the action's outcome; False when it had one already."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        row = await connection.fetchrow(
            QUERIES["finish_operator_audit"], entry_id, status, hospital_id, before, after
        )
    return row is not None


async def entries(
    pool: Any,
    *,
    hospitals: list[str] | None,
    since: datetime,
    until: datetime,
    after_id: int,
    limit: int,
) -> list[asyncpg.Record]:
    """Entries in ``[since, until)`` after ``after_id``, oldest first, of ``hospitals``
    only (``None``: every entry)."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        rows: list[asyncpg.Record] = await connection.fetch(
            QUERIES["list_operator_audit"], hospitals, since, until, after_id, limit
        )
    return rows
