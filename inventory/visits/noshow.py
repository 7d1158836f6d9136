"""The worker's visits loop: bookings never checked in by the end of their session plus
the hospital's grace (``no_show_grace_s``) become ``no_show``, then the no-show rule
looks at every new no-show (:mod:`inventory.visits.bans`).

Which bookings can be no-shows: with a HIS, only those the HIS holds (``his_confirmed``:
a booking that never reached the hospital is not the patient's fault); without one, every
open booking. Only schedules still open count (a suspended schedule's bookings are
cancelled, never missed), and only sessions of the last ``max_age_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import structlog

from inventory.domain import HospitalPolicy
from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store.slot_store import SlotStore
from inventory.visits.bans import apply_no_show_rule
from inventory.visits.outcomes import record_no_show

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class VisitsConfig:
    """How the visits loop runs. Durations in seconds."""

    interval_s: float = 30.0
    #: True when a HIS is connected (only bookings it holds can be no-shows).
    with_his: bool = False
    max_age_days: int = 7
    batch_size: int = 200
    acquire_timeout_s: float = 10.0


@dataclass
class VisitsStats:
    """The loop's figures since start."""

    rounds: int = 0
    no_shows: int = 0
    bans: int = 0
    last_error: str = ""


async def mark_no_shows(pool: Any, *, config: VisitsConfig | None = None) -> list[str]:
    """One pass: the bookings that became no-shows now."""
    config = config or VisitsConfig()
    statuses = ["his_confirmed"] if config.with_his else ["confirmed", "submitted", "his_confirmed"]
    async with acquire(pool, timeout_s=config.acquire_timeout_s) as connection:
        rows = await connection.fetch(
            QUERIES["list_no_show_candidates"],
            statuses,
            float(HospitalPolicy().no_show_grace_s),
            config.max_age_days,
            config.batch_size,
        )
    marked = []
    for row in rows:
        if await record_no_show(
            pool,
            row["booking_id"],
            source="session_ended",
            acquire_timeout_s=config.acquire_timeout_s,
        ):
            marked.append(row["booking_id"])
    return marked


async def run_visits(
    pool: Any,
    store: SlotStore,
    *,
    stop: asyncio.Event,
    config: VisitsConfig | None = None,
    stats: VisitsStats | None = None,
) -> None:
    """No-shows, then the no-show rule, every ``interval_s`` until ``stop``; Redis or
    Postgres away: back off and resume. The hospitals' policies are read again every
    round (an operator may change them at any time)."""
    config = config or VisitsConfig()
    stats = stats if stats is not None else VisitsStats()
    backoff = Backoff(min(config.interval_s, 1.0), max(config.interval_s, 30.0))
    while not stop.is_set():
        stats.rounds += 1
        try:
            stats.no_shows += len(await mark_no_shows(pool, config=config))
            catalogue = PgCatalogue(pool, store)
            await catalogue.load_policies()
            stats.bans += len(
                await apply_no_show_rule(
                    pool,
                    store,
                    catalogue.policies.get,
                    batch_size=config.batch_size,
                    acquire_timeout_s=config.acquire_timeout_s,
                )
            )
        except TRANSIENT_ERRORS as error:
            stats.last_error = f"{type(error).__name__}: {error}"[:500]
            log.warning("visit.loop_failed", error=stats.last_error)
            await sleep_unless_stopped(stop, backoff.next_delay())
            continue
        backoff.reset()
        metrics.observe_visits_round(time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.interval_s)
