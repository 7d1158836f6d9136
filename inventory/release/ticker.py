"""The worker's room ticker: every registered release's room moved forward a few times a
second (draw at T0, lapse tokens, admit, sell out).

The API's watchers do the same for the releases their clients follow, so admission goes
on while either side runs; the steps are driven by the time passed in and idempotent,
so two drivers never admit twice or skip a ticket.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog

from inventory.errors import RoomNotFoundError
from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.release.rooms import RoomStore

log = structlog.get_logger(__name__)

#: The longest wait between two failed ticks.
TICKER_BACKOFF_MAX_S: Final = 5.0
#: At most this many steps per release and tick while its draw goes on in batches.
DRAW_STEPS_PER_TICK: Final = 20


async def tick(rooms: RoomStore) -> int:
    """Move every registered room forward once; returns the tickets admitted. Samples
    the rooms' waiting tickets and takeable units, and, once per release (the call that
    takes it out of the registry), how long after T0 it sold out."""
    admitted = waiting = takeable = 0
    for release_id in await rooms.active():
        try:
            for _ in range(DRAW_STEPS_PER_TICK):
                step = await rooms.advance(release_id)
                admitted += step.admitted
                if step.state != "open" or step.drawn == 0:
                    break
            snap = await rooms.snapshot(release_id)
        except RoomNotFoundError:
            await rooms.retire(release_id)
            continue
        if snap is None:
            await rooms.retire(release_id)
            continue
        if snap.state == "sold_out":
            if await rooms.retire(release_id):
                metrics.observe_room_sold_out((snap.sold_out_ms - snap.t0_ms) / 1000)
            continue
        waiting += max(0, snap.joined - snap.admitted)
        if snap.state == "admitting":
            takeable += step.takeable
    metrics.observe_rooms(waiting, takeable)
    return admitted


async def run_room_ticker(rooms: RoomStore, *, interval_s: float, stop: asyncio.Event) -> None:
    """Tick every ``interval_s`` until ``stop`` is set; a failed tick is logged and retried
    after a jittered back-off (Redis down must not end the loop)."""
    backoff = Backoff(interval_s, max(interval_s, TICKER_BACKOFF_MAX_S))
    while not stop.is_set():
        try:
            await tick(rooms)
        except TRANSIENT_ERRORS as error:
            delay = backoff.next_delay()
            log.warning(
                "rooms.tick_failed",
                code=getattr(error, "code", type(error).__name__),
                failures=backoff.failures,
                retry_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        await sleep_unless_stopped(stop, interval_s)
