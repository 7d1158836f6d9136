"""The record of ``Idempotency-Key`` claims and answers in Postgres (``idempotency_keys``,
docs/schema.md), for the mutating routes that are not a reserve.

The rules (who claims, when an answer is replayed, when a claim is taken over) are the
API's, in the wrapper of the recorded routes (inventory/api/idempotency.py); this
module only names the queries.
Rows carry the columns docs/schema.md lists for ``get_idempotency_key``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

ACQUIRE_TIMEOUT_S: Final = 5.0


async def claim(
    pool: Any, account_id: str, key: str, operation: str, fingerprint: str
) -> tuple[bool, asyncpg.Record | None]:
    """Claim the key for a first request: (True, None); or, when it is taken, (False,
    the claim's row), (False, None) when the claim went away between the two reads.
    One connection for both, so the read sees what refused the claim."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        claimed = await connection.fetchrow(
            QUERIES["claim_idempotency_key"], account_id, key, operation, fingerprint
        )
        if claimed is not None:
            return True, None
        return False, await connection.fetchrow(QUERIES["get_idempotency_key"], account_id, key)


async def take_over(
    pool: Any, account_id: str, key: str, created_at: datetime, abandoned_s: float
) -> bool:
    """Drop a claim older than ``abandoned_s`` that never got an answer, if it is still
    the claim read (``created_at``); whether it was dropped."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        dropped = await connection.fetchrow(
            QUERIES["take_over_idempotency_key"], account_id, key, created_at, abandoned_s
        )
    return dropped is not None


async def complete(pool: Any, account_id: str, key: str, status: int, body: Any) -> None:
    """Keep the answer of the request that claimed the key (``body``: its JSON, or None)."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        await connection.execute(QUERIES["complete_idempotency_key"], account_id, key, status, body)


async def release(pool: Any, account_id: str, key: str) -> None:
    """Drop a claim that has no answer, so a retry runs again."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        await connection.execute(QUERIES["release_idempotency_key"], account_id, key)
