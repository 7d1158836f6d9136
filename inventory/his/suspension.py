"""停诊: a suspended schedule's holds released and bookings cancelled with a refund, one
code path for every way a schedule is suspended (the HIS sync, the reconciler, an
operator's ``POST /v1/operator/schedules/{id}/suspend``).

Suspending is two parts:

1. :meth:`PgCatalogue.set_status` closes the schedule in Postgres and Redis together
   (reserves and confirms refused from then on) and keeps the reason in
   ``schedules.status_reason``;
2. :func:`cancel_suspended` ends what the schedule still holds: each open booking is
   cancelled through :func:`inventory.his.compensation.end_booking` (one transaction:
   status, history, refund request, a ``booking_cancelled_by_suspension`` event in
   ``lifecycle_events``; then the unit released with ``force``, past the cancellation
   deadline), then every open hold is released. A booking sent to the HIS is then
   cancelled there by the submitter's cancellation queue.

The HIS sync runs both at once. The operator route runs only the first: the worker's
sweep (:func:`run_suspension_sweep`) finds suspended schedules that still hold
something and runs the second, so a worker killed half-way leaves nothing behind: the
next sweep finds what is still open, and a booking already cancelled is never cancelled
(or refunded) again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from inventory.domain import HoldState
from inventory.his.compensation import (
    SUSPENDED,
    end_booking,
    open_holds_of_schedule,
    release_unit,
)
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.record.bookings import PgBookings
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import SlotStore

log = structlog.get_logger(__name__)


@dataclass
class SuspensionResult:
    """What closing one schedule did."""

    schedule_id: str
    bookings_cancelled: list[str] = field(default_factory=list)
    holds_released: list[str] = field(default_factory=list)
    refunds_requested: list[str] = field(default_factory=list)


@dataclass
class SweepStats:
    """The sweep's figures since start."""

    rounds: int = 0
    schedules: int = 0
    bookings_cancelled: int = 0
    holds_released: int = 0
    last_error: str = ""


async def cancel_suspended(
    pool: Any,
    store: SlotStore,
    schedule_id: str,
    tag: str,
    *,
    message: str | None,
    acquire_timeout_s: float = 10.0,
) -> SuspensionResult:
    """Cancel a suspended schedule's open bookings (refund requested, the patient told
    ``message``) and release its open holds. Idempotent: a second call finds nothing
    open; safe beside another caller doing the same (each booking ends once)."""
    result = SuspensionResult(schedule_id)
    bookings = PgBookings(pool)
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        # Bookings offered another doctor (替诊) are left alone while the offer is live:
        # the patient's answer moves or cancels them (inventory/booking/substitution.py).
        kept = {
            row["booking_id"]
            for row in await connection.fetch(QUERIES["list_schedule_kept_bookings"], schedule_id)
        }
    holds = [
        h for h in await open_holds_of_schedule(store, tag, schedule_id) if h.hold_id not in kept
    ]
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        open_rows = await connection.fetch(QUERIES["list_schedule_open_bookings"], schedule_id)
    in_postgres = {row["booking_id"] for row in open_rows}
    for hold in holds:
        if hold.state is HoldState.BOOKED and hold.hold_id not in in_postgres:
            # Booked in Redis, not (yet) in Postgres (a confirm whose write failed):
            # record it first so the patient's booking, and its refund, are durable.
            # A booking already cancelled here stays cancelled (insert_booking is a no-op).
            await bookings.record(hold)
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        open_rows = await connection.fetch(QUERIES["list_schedule_open_bookings"], schedule_id)
    ended: set[str] = set()
    for row in open_rows:
        outcome = await end_booking(
            pool,
            store,
            row["booking_id"],
            outcome="cancelled",
            code=SUSPENDED,
            message=message,
            from_status=row["status"],
            acquire_timeout_s=acquire_timeout_s,
        )
        if outcome is not None:
            ended.add(row["booking_id"])
            result.bookings_cancelled.append(row["booking_id"])
            if outcome.refund_id is not None:
                result.refunds_requested.append(outcome.refund_id)
    for hold in holds:
        if hold.hold_id in ended:
            continue
        # A hold, or a booking ended here by an earlier call whose release was lost.
        if await release_unit(store, hold.hold_id, SUSPENDED):
            result.holds_released.append(hold.hold_id)
    if result.bookings_cancelled or result.holds_released:
        log.info(
            "schedule.suspension_applied",
            schedule=schedule_id,
            bookings=len(result.bookings_cancelled),
            holds=len(result.holds_released),
            refunds=len(result.refunds_requested),
        )
    return result


@dataclass(frozen=True, slots=True)
class SweepConfig:
    """How the worker's sweep runs. Durations in seconds."""

    interval_s: float = 2.0
    #: Suspended schedules this many days back are still looked at (a visit day past
    #: its end keeps nothing to cancel, but a sweep missed around midnight catches up).
    days_back: int = 1
    batch_size: int = 20
    acquire_timeout_s: float = 10.0


async def sweep_suspensions(
    pool: Any,
    store: SlotStore,
    *,
    config: SweepConfig | None = None,
    stats: SweepStats | None = None,
) -> list[SuspensionResult]:
    """One sweep: every suspended schedule that still holds a booking or a hold (in
    Postgres) gets :func:`cancel_suspended`; what each did."""
    config = config or SweepConfig()
    stats = stats if stats is not None else SweepStats()
    since = datetime.now(tz=UTC).date() - timedelta(days=config.days_back)
    async with acquire(pool, timeout_s=config.acquire_timeout_s) as connection:
        rows = await connection.fetch(
            QUERIES["list_suspensions_to_finish"], since, config.batch_size
        )
    results = []
    for row in rows:
        tag = keys.department_day_tag(row["department_id"], row["visit_date"])
        result = await cancel_suspended(
            pool,
            store,
            row["schedule_id"],
            tag,
            message=row["status_reason"] or None,
            acquire_timeout_s=config.acquire_timeout_s,
        )
        stats.schedules += 1
        stats.bookings_cancelled += len(result.bookings_cancelled)
        stats.holds_released += len(result.holds_released)
        results.append(result)
    return results


async def run_suspension_sweep(
    pool: Any,
    store: SlotStore,
    *,
    stop: asyncio.Event,
    config: SweepConfig | None = None,
    stats: SweepStats | None = None,
) -> None:
    """Sweep every ``interval_s`` until ``stop``; Redis or Postgres away: back off and
    resume."""
    config = config or SweepConfig()
    stats = stats if stats is not None else SweepStats()
    backoff = Backoff(config.interval_s, max(config.interval_s, 30.0))
    while not stop.is_set():
        stats.rounds += 1
        try:
            await sweep_suspensions(pool, store, config=config, stats=stats)
        except TRANSIENT_ERRORS as error:
            stats.last_error = f"{type(error).__name__}: {error}"[:500]
            delay = backoff.next_delay()
            log.warning("schedule.suspension_sweep_failed", error=stats.last_error)
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.interval_s)
