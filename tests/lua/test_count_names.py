"""A slot's counts keep their wire names in Redis (``{slot}:rem``, ``{slot}:cap``, ...)
and read back as SlotCounts the same way by every path: a script's reply, HMGET, and a
whole slots hash (the sampler's and the check's read)."""

from __future__ import annotations

from inventory.domain import SlotCounts
from inventory.store.slot_store import WIRE_COUNT_NAMES, counts_of_slots_hash

from .conftest import Scenario


async def test_every_read_of_the_counts_agrees(scenario: Scenario) -> None:
    """After a reserve, the reply's counts, slot_counts (HMGET) and the slots hash read
    whole agree; the hash's other fields are not counts."""
    await scenario.store.load_schedule(scenario.schedule({"slot-a": 3, "slot-b": 1}))
    outcome = await scenario.store.reserve(scenario.request("slot-a"))
    assert outcome.counts == SlotCounts(capacity=3, remaining=2, held=1, booked=0, waiting=0)
    raw = await scenario.client.hgetall(scenario.tag_keys.slots)
    assert (raw["slot-a:cap"], raw["slot-a:rem"], raw["slot-a:held"]) == ("3", "2", "1")
    from_hash = counts_of_slots_hash(raw)
    assert from_hash == await scenario.store.slot_counts(scenario.tag, ["slot-a", "slot-b"])
    assert from_hash["slot-a"] == outcome.counts
    assert from_hash["slot-b"] == SlotCounts(1, 1, 0, 0, 0)


def test_a_missing_or_unreadable_count_breaks_conservation() -> None:
    """A count missing from the hash reads 0 and one that is not a number too, so the
    slot is reported as violating the invariant rather than stopping the reader."""
    fields = {f"s1:{wire}": "1" for wire in WIRE_COUNT_NAMES.values()}
    fields |= {"s1:held": "0", "s1:booked": "0", "s1:wait": "0", "s1:sched": "x"}
    assert counts_of_slots_hash(fields) == {"s1": SlotCounts(1, 1, 0, 0, 0)}
    assert counts_of_slots_hash(fields)["s1"].conserved
    assert not counts_of_slots_hash(fields | {"s1:rem": "?"})["s1"].conserved
    assert not counts_of_slots_hash({"s2:cap": "2", "s2:rem": "1"})["s2"].conserved
