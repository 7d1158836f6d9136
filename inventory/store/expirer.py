"""The expirer: sweeps due holds and waiting units of every tag in bounded batches.

Reserve already reclaims due holds of its own slot, so correctness never waits for this
loop; it keeps counts, hold states and the outbox current for slots nobody is reserving.
"""

from __future__ import annotations

import asyncio

import structlog

from inventory.ops import metrics
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.store.slot_store import ExpireResult, SlotStore

log = structlog.get_logger(__name__)

#: The longest wait between two failed sweeps.
EXPIRER_BACKOFF_MAX_S = 5.0


async def run_expirer(store: SlotStore, *, interval_s: float, stop: asyncio.Event) -> None:
    """Sweep every ``interval_s`` until ``stop`` is set; a failed sweep is logged and
    retried after a jittered back-off (Redis down must not end the loop)."""
    backoff = Backoff(interval_s, max(interval_s, EXPIRER_BACKOFF_MAX_S))
    while not stop.is_set():
        try:
            result: ExpireResult = await store.expire_all()
        except TRANSIENT_ERRORS as error:
            metrics.observe_expire_failure()
            delay = backoff.next_delay()
            log.warning(
                "expirer.sweep_failed",
                code=getattr(error, "code", type(error).__name__),
                error=str(error),
                failures=backoff.failures,
                retry_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        metrics.observe_expire_sweep(result.changed, result.still_due)
        if result.changed:
            log.info("expirer.swept", tags=result.tags, changed=result.changed)
        await sleep_unless_stopped(stop, interval_s)
