"""Hospitals' WeChat Pay sub-merchants (partner mode) in Postgres (``hospital_merchants``,
docs/schema.md)."""

from __future__ import annotations

from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

ACQUIRE_TIMEOUT_S: Final = 5.0


async def merchant(pool: Any, hospital_id: str) -> asyncpg.Record | None:
    """The hospital's sub-merchant row, or None."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        return await connection.fetchrow(QUERIES["get_hospital_merchant"], hospital_id)


async def set_merchant(
    pool: Any, hospital_id: str, sub_mchid: str, sub_appid: str
) -> asyncpg.Record:
    """Set the hospital's sub-merchant; its row (with ``inserted``)."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        row: asyncpg.Record = await connection.fetchrow(
            QUERIES["upsert_hospital_merchant"], hospital_id, sub_mchid, sub_appid
        )
    return row
