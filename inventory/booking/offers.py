"""The waitlist offers' settler: the worker's second step of offers made under rules
kept on the patient's own tag (blacklist, at most N open holds and bookings).

The step that frees a unit offers it to the first waiting patient at once, in the
schedule's tag; the rules on the patient's tag cannot be checked in that script (another
hash tag), so the offer waits in the tag's ``offers`` index until this loop has taken
the patient's token for it (settled: it can be paid) or found a rule that refuses it
(released: its unit goes to the next waiting patient in that step). Every step is safe
to repeat, so a worker killed at any point leaves nothing stuck: the next sweep (of this
process or another) picks the offer up again, and an offer nobody settles still ends at
its own payment deadline. A patient paying first settles the offer on the way
(:meth:`SlotStore.confirm`).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from inventory.errors import StoreFencedError
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.record.catalogue import PgCatalogue
from inventory.store import keys
from inventory.store.slot_store import SlotStore, _guard, _text

log = structlog.get_logger(__name__)

#: How often the hospitals' policies are read again, in seconds.
POLICY_REFRESH_S = 30.0
#: The longest wait between two failed sweeps.
SETTLER_BACKOFF_MAX_S = 5.0


async def settle_offers(store: SlotStore, *, per_tag: int = 100) -> dict[str, int]:
    """One sweep: settle (or refuse) every tag's unsettled offers, at most ``per_tag``
    a tag. Returns how many were settled, refused, and found gone."""
    outcomes = {"settled": 0, "refused": 0, "gone": 0}
    tags = sorted(_text(t) for t in await _guard(store.client.smembers(keys.TAG_REGISTRY_KEY)))
    for tag in tags:
        for hold_id in await store.unsettled_offers(tag, per_tag):
            try:
                outcome = await store.settle_offer(hold_id)
            except StoreFencedError:
                break  # the tag is being rebuilt: nothing of it moves until then
            outcomes[outcome] += 1
            if outcome == "refused":
                log.info("waitlist.offer_refused", hold_id=hold_id, tag=tag)
    return outcomes


async def run_offer_settler(
    store: SlotStore, catalogue: PgCatalogue, *, interval_s: float, stop: asyncio.Event
) -> None:
    """Sweep every ``interval_s`` until ``stop`` is set, reading the hospitals'
    policies (the rules an offer is checked against) every ``POLICY_REFRESH_S``; a
    failed sweep is logged and retried after a jittered back-off."""
    backoff = Backoff(interval_s, max(interval_s, SETTLER_BACKOFF_MAX_S))
    policies_read_at = -POLICY_REFRESH_S
    while not stop.is_set():
        try:
            if time.monotonic() - policies_read_at >= POLICY_REFRESH_S:
                await catalogue.load_policies()
                policies_read_at = time.monotonic()
            outcomes = await settle_offers(store)
        except TRANSIENT_ERRORS as error:
            delay = backoff.next_delay()
            log.warning(
                "waitlist.settle_failed",
                code=getattr(error, "code", type(error).__name__),
                error=str(error),
                failures=backoff.failures,
                retry_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        if any(outcomes.values()):
            log.info("waitlist.offers_settled", **outcomes)
        await sleep_unless_stopped(stop, interval_s)
