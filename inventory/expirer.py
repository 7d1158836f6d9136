"""The expirer: sweeps due holds and waiting units of every tag in bounded batches.

Reserve already reclaims due holds of its own slot, so correctness never waits for this
loop; it keeps counts, hold states and the outbox current for slots nobody is reserving.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from inventory import metrics
from inventory.errors import InventoryError
from inventory.store import ExpireResult, SlotStore

log = structlog.get_logger(__name__)


async def run_expirer(store: SlotStore, *, interval_s: float, stop: asyncio.Event) -> None:
    """Sweep every ``interval_s`` until ``stop`` is set; a failed sweep is logged and
    retried at the next interval (Redis down must not end the loop)."""
    while not stop.is_set():
        try:
            result: ExpireResult = await store.expire_all()
        except InventoryError as error:
            metrics.observe_expire_failure()
            log.warning("expirer.sweep_failed", code=error.code, error=str(error))
        else:
            metrics.observe_expire_sweep(result.changed, result.still_due)
            if result.changed:
                log.info("expirer.swept", tags=result.tags, changed=result.changed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
