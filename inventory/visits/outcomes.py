"""A booking's visit recorded: ``visited`` (checked in at a kiosk, by staff, or as the HIS
reports it) or ``no_show``, with the consultation's start and end when known.

Each change is one Postgres transaction: the booking's status, its status-history row
and the decision's record (``lifecycle_events``: ``booking_visited``,
``booking_no_show``; the notifier reads the booking's change through its trigger). The
unit stays taken in Redis: the visit used it. Recording the same outcome again changes
nothing (a retry, the HIS read twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from inventory.ops import metrics
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES

log = structlog.get_logger(__name__)

#: Who checked the patient in.
CheckInSource = Literal["his", "staff", "kiosk"]
#: Who decided the no-show: the HIS, the worker after the session and its grace, or an
#: operator at the desk (the staff console).
NoShowSource = Literal["his", "session_ended", "staff"]

VISITED_EVENT = "booking_visited"
NO_SHOW_EVENT = "booking_no_show"


@dataclass(frozen=True, slots=True)
class VisitRecord:
    """A booking's visit as recorded."""

    booking_id: str
    status: str
    changed: bool  #: False when it was recorded already (nothing new written)
    checked_in_at: datetime | None = None
    checked_in_by: str | None = None
    consultation_started_at: datetime | None = None
    consultation_ended_at: datetime | None = None


def consultation_period(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The consultation's start and end as stored: an end before its start is the HIS's
    mistake, and is dropped rather than recorded."""
    if start is not None and end is not None and end < start:
        return start, None
    return start, end


async def record_visit(
    pool: Any,
    booking_id: str,
    *,
    source: CheckInSource,
    at: datetime | None = None,
    consultation: tuple[datetime | None, datetime | None] = (None, None),
    acquire_timeout_s: float = 5.0,
) -> VisitRecord | None:
    """The booking is ``visited`` (checked in at ``at``, now by default, by ``source``);
    None when it cannot be (cancelled, rejected, no such booking)."""
    when = at or datetime.now(tz=UTC)
    start, end = consultation_period(*consultation)
    async with (
        acquire(pool, timeout_s=acquire_timeout_s) as connection,
        connection.transaction(),
    ):
        row = await connection.fetchrow(
            QUERIES["record_visit"], booking_id, when, source, start, end
        )
        if row is None:
            return None
        changed = row["from_status"] != "visited"
        if changed:
            await connection.execute(
                QUERIES["add_status_history"],
                booking_id,
                row["from_status"],
                "visited",
                f"checked_in: {source}",
                row["checked_in_at"],
                f"visit:{booking_id}:visited",
            )
            await connection.execute(
                QUERIES["add_booking_event"],
                f"{VISITED_EVENT}:{booking_id}",
                VISITED_EVENT,
                booking_id,
                row["checked_in_at"],
                {
                    "source": row["checked_in_by"],
                    "checked_in_at": row["checked_in_at"].isoformat(),
                    "was": row["from_status"],
                },
            )
    if changed:
        metrics.observe_visit_outcome("visited", source)
        log.info("visit.checked_in", booking=booking_id, source=source, was=row["from_status"])
    return VisitRecord(
        booking_id,
        row["status"],
        changed,
        row["checked_in_at"],
        row["checked_in_by"],
        row["consultation_started_at"],
        row["consultation_ended_at"],
    )


async def record_no_show(
    pool: Any,
    booking_id: str,
    *,
    source: NoShowSource,
    at: datetime | None = None,
    acquire_timeout_s: float = 5.0,
) -> bool:
    """An open booking is a ``no_show``; False when it is not open any more (checked
    in, cancelled, or recorded already)."""
    when = at or datetime.now(tz=UTC)
    async with (
        acquire(pool, timeout_s=acquire_timeout_s) as connection,
        connection.transaction(),
    ):
        row = await connection.fetchrow(QUERIES["record_no_show"], booking_id, when)
        if row is None:
            return False
        await connection.execute(
            QUERIES["add_status_history"],
            booking_id,
            row["from_status"],
            "no_show",
            f"no_show: {source}",
            when,
            f"visit:{booking_id}:no_show",
        )
        await connection.execute(
            QUERIES["add_booking_event"],
            f"{NO_SHOW_EVENT}:{booking_id}",
            NO_SHOW_EVENT,
            booking_id,
            when,
            {"source": source, "was": row["from_status"]},
        )
    metrics.observe_visit_outcome("no_show", source)
    log.info("visit.no_show", booking=booking_id, source=source)
    return True
