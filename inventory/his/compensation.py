"""Ending a booking because of the hospital: the HIS refused it (rejected) or its schedule
was suspended (停诊, cancelled). Shared by the submitter, the schedule sync and the
reconciler.

The order is what makes it safe to crash anywhere:

1. one Postgres transaction: the booking's new status with the reason the patient is
   shown (``cancel_reason``, ``"<code>: <the hospital's words>"``), its status-history
   row, the refund request (:func:`inventory.payments.refunds.request_refund`) and the
   decision's record (``lifecycle_events``, :data:`ENDED_EVENTS`; the patient is told
   from the booking's own change, by the notification triggers);
2. then the unit goes back in Redis (``release`` with ``force``, reason ``<code>``).

A crash between the two leaves a booking ended in Postgres whose unit is still booked;
the submitter's sweep (``list_unreleased_bookings``) releases it again (release is
idempotent). The persister's later ``booking_cancelled`` event changes nothing: the
booking is no longer open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import structlog

from inventory.domain import Hold, HoldState
from inventory.errors import InventoryError
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)

#: Reason codes (the part of ``cancel_reason`` before ": "; also the release and refund
#: reasons).
HIS_REJECTED = "his_rejected"
SUSPENDED = "suspended"
HIS_CANCELLED = "his_cancelled"

Outcome = Literal["rejected", "cancelled"]

#: The ``lifecycle_events`` type of a booking ended for each reason code (what the
#: notifier tells the patient); another code gets :data:`OTHER_ENDED_EVENT`.
ENDED_EVENTS: dict[str, str] = {
    SUSPENDED: "booking_cancelled_by_suspension",
    HIS_REJECTED: "booking_rejected_by_his",
    HIS_CANCELLED: "booking_cancelled_by_his",
}
OTHER_ENDED_EVENT = "booking_ended_by_hospital"


@dataclass(frozen=True, slots=True)
class EndedBooking:
    """What ending one booking did."""

    booking_id: str
    outcome: Outcome
    reason: str  #: as the patient sees it in ``cancel_reason``
    refund_id: str | None  #: None: nothing was paid through a provider (or no refund API)
    released: bool  #: the unit went back in Redis now (else the sweep will do it)


def patient_reason(code: str, message: str | None) -> str:
    """``cancel_reason`` as stored: the stable code, then the hospital's words."""
    text = " ".join((message or "").split())[:200]
    return f"{code}: {text}" if text else code


def reason_code(cancel_reason: str) -> str:
    """The stable code of a stored ``cancel_reason``."""
    return cancel_reason.split(":", 1)[0].strip() or HIS_REJECTED


async def end_booking(
    pool: Any,
    store: SlotStore,
    booking_id: str,
    *,
    outcome: Outcome,
    code: str,
    message: str | None = None,
    from_status: str | None = None,
    acquire_timeout_s: float = 5.0,
) -> EndedBooking | None:
    """Reject or cancel one open booking, request its refund, release its unit.

    None when the booking was not open any more (someone else ended it: nothing is done
    twice). Raises DatabaseUnavailableError when Postgres is down (retry later); a Redis
    failure after the commit is logged and left to the sweep.
    """
    reason = patient_reason(code, message)
    now = datetime.now(tz=UTC)
    refund_id: str | None = None
    async with (
        acquire(pool, timeout_s=acquire_timeout_s) as connection,
        connection.transaction(),
    ):
        if outcome == "rejected":
            row = await connection.fetchrow(QUERIES["reject_booking"], booking_id, reason)
        else:
            row = await connection.fetchrow(QUERIES["cancel_booking"], booking_id, now, reason)
        if row is None:
            return None
        await connection.execute(
            QUERIES["add_status_history"],
            booking_id,
            from_status,
            outcome,
            reason,
            now,
            f"his:{booking_id}:{outcome}",
        )
        refund_id = await _request_refund(connection, booking_id, code, outcome)
        event = ENDED_EVENTS.get(code, OTHER_ENDED_EVENT)
        await connection.execute(
            QUERIES["add_booking_event"],
            f"{event}:{booking_id}",
            event,
            booking_id,
            now,
            {"outcome": outcome, "code": code, "reason": reason, "refund_id": refund_id},
        )
    released = await release_unit(store, booking_id, code)
    log.info(
        "his.booking_ended",
        booking=booking_id,
        outcome=outcome,
        reason=code,
        refund=refund_id,
        released=released,
    )
    return EndedBooking(booking_id, outcome, reason, refund_id, released)


async def _request_refund(connection: Any, booking_id: str, code: str, outcome: str) -> str | None:
    """Ask the payments package for the refund, inside the caller's transaction."""
    try:
        from inventory.payments.errors import RefundRequestError
        from inventory.payments.refunds import request_refund
    except ModuleNotFoundError:  # a deployment without the payments package
        log.warning("his.refund_api_missing", booking=booking_id)
        return None
    try:
        refund = await request_refund(
            connection, booking_id, None, code, f"his:{booking_id}:{outcome}"
        )
    except RefundRequestError as error:
        # The payment loop's safety net (paid, booking ended, no refund) retries it; the
        # booking must end all the same.
        log.error("his.refund_request_refused", booking=booking_id, error=str(error))
        return None
    return refund.refund_id if refund is not None else None


async def release_unit(store: SlotStore, booking_id: str, code: str) -> bool:
    """Give the booking's unit back in Redis (idempotent); False if that failed."""
    try:
        await store.release(booking_id, account_id="", reason=code, force=True)
    except InventoryError as error:
        if error.code in ("hold_not_found", "hold_expired"):
            return True  # nothing held in Redis, or the unit went back by expiry
        log.warning("his.release_failed", booking=booking_id, error=error.code)
        return False
    return True


async def open_holds_of_schedule(store: SlotStore, tag: str, schedule_id: str) -> list[Hold]:
    """The schedule's holds and bookings that are open in Redis (held or booked)."""
    raw = await store.client.hgetall(keys.tag_keys(tag).holds)
    found = []
    for value in raw.values():
        hold = Hold.from_record(orjson.loads(value))
        if hold.schedule_id == schedule_id and hold.state in (HoldState.HELD, HoldState.BOOKED):
            found.append(hold)
    return sorted(found, key=lambda h: h.hold_id)
