"""What a hospital's report reads from Postgres: its schedules' outcomes and its
cancellations' lead times over a range of visit dates (named queries; the figures are
computed in inventory/reports)."""

from __future__ import annotations

from datetime import date
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

ACQUIRE_TIMEOUT_S: Final = 5.0


async def schedule_outcomes(
    pool: Any, hospital_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """Every schedule of the hospital visited from ``first`` to ``last`` (inclusive),
    with its capacity, sell-out instant, units taken an hour after release and bookings
    by outcome."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        rows: list[asyncpg.Record] = await connection.fetch(
            QUERIES["list_schedule_outcomes"], hospital_id, first, last
        )
    return rows


async def cancellation_leads(
    pool: Any, hospital_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """(department_id, lead_s) of every cancelled booking in the range."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        rows: list[asyncpg.Record] = await connection.fetch(
            QUERIES["list_cancellation_leads"], hospital_id, first, last
        )
    return rows


async def booking_outcomes(
    pool: Any, department_id: str, first: date, last: date
) -> list[asyncpg.Record]:
    """A department's bookings as the capacity estimator reads them."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        rows: list[asyncpg.Record] = await connection.fetch(
            QUERIES["list_department_booking_outcomes"], department_id, first, last
        )
    return rows


async def hospital_exists(pool: Any, hospital_id: str) -> bool:
    """Whether the hospital is in the catalogue."""
    async with acquire(pool, timeout_s=ACQUIRE_TIMEOUT_S) as connection:
        row = await connection.fetchrow(QUERIES["get_hospital"], hospital_id)
    return row is not None
