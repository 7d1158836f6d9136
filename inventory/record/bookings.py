"""The durable record of holds and bookings in Postgres, written from store results.

Confirm answers only after :meth:`PgBookings.record` has committed the booking, so a
paid booking survives the loss of Redis. Writes are idempotent (``upsert_hold`` only
moves a row forward; ``insert_booking`` and ``cancel_booking`` are no-ops when done),
so a retried confirm, or the persister replaying the same change from the outbox,
changes nothing twice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from inventory.domain import Hold, HoldState
from inventory.record.catalogue import zone_named
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys

#: Booking statuses that hold a unit of their slot (``rejected`` and ``cancelled`` gave
#: theirs back).
HOLDING_STATUSES = ("confirmed", "submitted", "his_confirmed", "visited", "no_show")

#: Bookings API columns, in the order the API shows them.
_BOOKING_FIELDS = (
    "booking_id",
    "hold_id",
    "slot_id",
    "schedule_id",
    "patient_id",
    "status",
    "amount_fen",
    "payment_ref",
    "confirmed_at",
    "cancelled_at",
    "cancel_reason",
    "his_appointment_no",
    "visit_time",
    "place",
    "visit_date",
    "session",
    "location",
    "slot_starts_at",
    "slot_ends_at",
    "doctor_id",
    "doctor_name",
    "doctor_title",
    "department_id",
    "department_name",
    "hospital_id",
    "hospital_name",
)
#: Booking statuses a patient can still cancel (until the cancellation deadline).
CANCELLABLE_STATUSES = frozenset({"confirmed", "submitted", "his_confirmed"})


def _instant(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def booking_row_view(row: asyncpg.Record, now: datetime | None = None) -> dict[str, Any]:
    """A booking row (of ``booking_details``) as the API shows it (JSON-ready): instants
    in the hospital's time zone with its offset; the cancellation deadline and whether
    the booking can still be cancelled (``now``: this moment)."""
    zone = zone_named(row["hospital_timezone"])
    view: dict[str, Any] = {}
    for name in _BOOKING_FIELDS:
        value = row[name]
        if isinstance(value, datetime):
            view[name] = value.astimezone(zone).isoformat()
        else:
            view[name] = value.isoformat() if isinstance(value, date) else value
    deadline: datetime = row["cancel_deadline"]
    view["cancel_deadline"] = deadline.astimezone(zone).isoformat()
    view["cancellable"] = (
        row["status"] in CANCELLABLE_STATUSES and (now or datetime.now(tz=UTC)) < deadline
    )
    return view


class PgBookings:
    """Holds and bookings in Postgres."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._timeout = acquire_timeout_s

    async def record(self, hold: Hold) -> None:
        """Write the hold as the store returned it and, if it is (or was) a booking, the
        booking; one transaction. Raises DatabaseUnavailableError when Postgres is down."""
        async with (
            acquire(self._pool, timeout_s=self._timeout) as connection,
            connection.transaction(),
        ):
            await record_hold(connection, hold)

    async def list_for_account(self, account_id: str, limit: int) -> list[dict[str, Any]]:
        """The account's bookings, newest first."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(
                QUERIES["list_account_bookings"], account_id, None, None, limit
            )
        return [booking_row_view(row) for row in rows]

    async def open_hold_ids(self, account_id: str, limit: int) -> list[str]:
        """The ids of the account's holds the record has as still waiting for payment,
        newest first (the store has the last word on each one's state)."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            rows = await connection.fetch(QUERIES["list_account_open_holds"], account_id, limit)
        return [str(row["hold_id"]) for row in rows]

    async def get_for_account(self, booking_id: str, account_id: str) -> dict[str, Any] | None:
        """One of the account's bookings, or None (also for another account's)."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(QUERIES["get_account_booking"], account_id, booking_id)
        return booking_row_view(row) if row is not None else None

    async def department_outcomes(
        self, department_id: str, first: date, last: date
    ) -> list[asyncpg.Record]:
        """Every booking of a department with a visit date from ``first`` to ``last``
        (inclusive), as the capacity estimator reads it (inventory/capacity/records.py)."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            return list(
                await connection.fetch(
                    QUERIES["list_department_booking_outcomes"], department_id, first, last
                )
            )

    async def hold_schedule_id(self, hold_id: str) -> str | None:
        """The schedule of a hold the record has (None: it has no such hold)."""
        async with acquire(self._pool, timeout_s=self._timeout) as connection:
            row = await connection.fetchrow(QUERIES["get_hold"], hold_id)
        return str(row["schedule_id"]) if row is not None else None


async def record_hold(connection: Any, hold: Hold) -> None:
    """:meth:`PgBookings.record` on a connection, inside the caller's transaction."""
    await connection.execute(
        QUERIES["upsert_hold"],
        hold.hold_id,
        keys.tag_of_hold(hold.hold_id),
        hold.slot_id,
        hold.schedule_id,
        hold.account_id,
        hold.patient_id,
        hold.channel,
        hold.amount_fen,
        hold.state.value,
        _instant(hold.deadline_ms),
        hold.extended,
        hold.payment_ref,
        _instant(hold.created_ms),
        _instant(hold.confirmed_ms),
        _instant(hold.ended_ms),
        hold.end_reason,
        0,
    )
    if hold.state in (HoldState.BOOKED, HoldState.CANCELLED) and hold.payment_ref:
        await connection.execute(QUERIES["insert_booking"], hold.hold_id)
    if hold.state is HoldState.CANCELLED:
        await connection.execute(
            QUERIES["cancel_booking"],
            hold.hold_id,
            _instant(hold.ended_ms),
            hold.end_reason,
        )
