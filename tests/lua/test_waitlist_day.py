"""The doctor's-day form of the 候补 waitlist against a real Redis: one entry waits on
every window of a doctor's day and is offered the first unit freed on any of them, in
join order with each schedule's own entries, in the step that frees it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from inventory import errors
from inventory.domain import WaitlistJoin, WaitlistState
from inventory.store.waitlist import WaitlistStore

from .conftest import START, Scenario, fresh_id
from .test_waitlist_steps import join_request, sold_out


def day_request(scenario: Scenario, schedules: list[str], **kwargs: str) -> WaitlistJoin:
    return replace(
        join_request(scenario, schedules[0], **kwargs),
        doctor_id=kwargs.get("doctor", "dr-1"),
        day_schedule_ids=tuple(schedules),
    )


@pytest.fixture
def waitlist(scenario: Scenario) -> WaitlistStore:
    return WaitlistStore(scenario.store)


async def test_a_day_entry_takes_the_first_unit_freed_on_any_window(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """Morning and afternoon sold out; a morning entry, then a day entry, then an
    afternoon entry. A freed morning unit goes to the morning entry (joined first); a
    freed afternoon unit to the day entry (before the afternoon one), which then leaves
    the morning queue: the next morning unit goes past it."""
    morning, morning_holds = await sold_out(scenario, capacity=2, slot="slot-am")
    afternoon, afternoon_holds = await sold_out(scenario, capacity=1, slot="slot-pm")
    early = await waitlist.join(join_request(scenario, morning))
    day = await waitlist.join(day_request(scenario, [morning, afternoon]))
    late = await waitlist.join(join_request(scenario, afternoon))
    assert day.entry.doctor_id == "dr-1"
    assert day.entry.day_schedule_ids == (morning, afternoon)
    # Second in the morning's queue, first in the afternoon's: its best place.
    assert (early.position, day.position, late.position) == (1, 1, 2)

    await scenario.store.release(morning_holds[0], account_id="", reason="patient_released")
    offered = await waitlist.entry(early.entry.entry_id)
    assert offered is not None
    assert offered.state is WaitlistState.OFFERED
    assert await waitlist.position(day.entry) == 1

    await scenario.store.release(afternoon_holds[0], account_id="", reason="patient_released")
    day_now = await waitlist.entry(day.entry.entry_id)
    assert day_now is not None
    assert day_now.state is WaitlistState.OFFERED
    assert (day_now.schedule_id, day_now.slot_id) == (afternoon, "slot-pm")
    offer = await scenario.store.get_hold(day_now.offer_hold_id)
    assert offer is not None
    assert (offer.slot_id, offer.patient_id) == ("slot-pm", day.entry.patient_id)
    assert await waitlist.position(late.entry) == 1

    # The day entry left the morning queue with its offer: the next morning unit has
    # nobody left to go to (the afternoon entry waits on the afternoon only).
    await scenario.store.release(morning_holds[1], account_id="", reason="patient_released")
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-am"])
    assert counts["slot-am"].remaining == 1
    still = await waitlist.entry(late.entry.entry_id)
    assert still is not None
    assert still.state is WaitlistState.WAITING


async def test_day_join_rules(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """Joining the same doctor's day again answers the same entry; a free unit in any
    window refuses the join (reserve it); a day of windows none of which takes entries
    is refused as its first is; leaving takes the entry out of every queue."""
    morning, _ = await sold_out(scenario, slot="slot-am")
    afternoon, _ = await sold_out(scenario, slot="slot-pm")
    account, patient = fresh_id("a"), fresh_id("p")
    first = await waitlist.join(
        day_request(scenario, [morning, afternoon], account_id=account, patient_id=patient)
    )
    again = await waitlist.join(
        day_request(scenario, [morning, afternoon], account_id=account, patient_id=patient)
    )
    assert again.replayed
    assert again.entry.entry_id == first.entry.entry_id
    # A plain entry of the same patient on one window is another entry.
    plain = await waitlist.join(
        join_request(scenario, morning, account_id=account, patient_id=patient)
    )
    assert not plain.replayed

    free = scenario.schedule({"slot-free": 1})
    await scenario.store.load_schedule(free)
    with pytest.raises(errors.WaitlistUnitsFreeError):
        await waitlist.join(day_request(scenario, [morning, free.schedule_id], doctor="dr-2"))

    later = scenario.schedule({"slot-later": 1}, release_at=START + timedelta(days=1))
    await scenario.store.load_schedule(later)
    with pytest.raises(errors.NotReleasedError):
        await waitlist.join(day_request(scenario, [later.schedule_id], doctor="dr-3"))

    other = await waitlist.join(day_request(scenario, [morning, afternoon], doctor="dr-4"))
    # Third in the morning's queue, second in the afternoon's: its best place.
    assert other.position == 2
    left = await waitlist.leave(first.entry.entry_id, account_id=account)
    assert left.entry.state is WaitlistState.LEFT
    assert await waitlist.position(other.entry) == 1  # first in the afternoon now
    members = await scenario.client.zrange(scenario.tag_keys.waitq, 0, -1)
    assert not [m for m in members if m.endswith(first.entry.entry_id)]
