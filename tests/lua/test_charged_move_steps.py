"""A charged move's store steps (a dearer target, the fee difference to be paid): the
new unit is a hold until the difference's deadline, confirm books it and the mark's
finish cancels the old booking; unpaid, the expirer frees the unit and the old booking
stays booked once the mark is dropped."""

from __future__ import annotations

from inventory.domain import HoldState, SlotCounts
from inventory.store.keys import hold_id_for

from .conftest import Scenario

CHEAP, DEAR = 3000, 8000


async def _booked(scenario: Scenario) -> tuple[str, str, str]:
    """A booking on a cheap slot and a dearer slot of the same day: (booking, dear slot)."""
    cheap = scenario.schedule({"cheap": 1}, fee_fen=CHEAP)
    dear = scenario.schedule({"dear": 1}, fee_fen=DEAR)
    await scenario.store.load_schedule(cheap)
    await scenario.store.load_schedule(dear)
    request = scenario.request("cheap")
    hold = (await scenario.store.reserve(request)).hold
    await scenario.store.confirm(hold.hold_id, account_id="", payment_ref="pay-1")
    new_id = hold_id_for(request.account_id, "reschedule:k1", scenario.tag)
    return hold.hold_id, new_id, request.account_id


async def test_charged_take_holds_then_confirm_and_finish_move(scenario: Scenario) -> None:
    """Within one department-day: the new unit is held (not booked) with the old booking
    counted out of one-per-day; paying confirms it, finish cancels the old one."""
    store = scenario.store
    old_id, new_id, account = await _booked(scenario)
    until = scenario.clock.now_ms + 600_000
    marked = await store.mark_move(
        "begin", old_id, new_id, account_id=account, until_ms=until, max_moves=1
    )
    taken = await store.take_move(
        new_id, marked.hold, slot_id="dear", until_ms=until, hold_until_ms=until
    )
    assert taken.hold.state is HoldState.HELD
    assert (taken.hold.amount_fen, taken.hold.deadline_ms) == (DEAR, until)
    assert taken.hold.moved_from == old_id
    assert taken.counts == SlotCounts(1, 0, 1, 0, 0)
    replay = await store.take_move(
        new_id, marked.hold, slot_id="dear", until_ms=until, hold_until_ms=until
    )
    assert replay.replayed
    assert replay.hold.state is HoldState.HELD
    booked = await store.confirm(new_id, account_id="", payment_ref="pay-diff")
    assert booked.hold.state is HoldState.BOOKED
    assert booked.hold.payment_ref == "pay-diff"
    await store.mark_move("finish", old_id, new_id)
    old = await store.get_hold(old_id)
    assert old is not None
    assert old.state is HoldState.CANCELLED
    counts = await store.slot_counts(scenario.tag, ["cheap", "dear"])
    assert counts == {"cheap": SlotCounts(1, 1, 0, 0, 0), "dear": SlotCounts(1, 0, 0, 1, 0)}


async def test_unpaid_charged_hold_expires_and_old_booking_stays(scenario: Scenario) -> None:
    """Past the difference's deadline the expirer frees the new unit; confirm is refused;
    the mark is dropped and the old booking is still booked."""
    store = scenario.store
    old_id, new_id, account = await _booked(scenario)
    until = scenario.clock.now_ms + 60_000
    marked = await store.mark_move(
        "begin", old_id, new_id, account_id=account, until_ms=until, max_moves=1
    )
    await store.take_move(new_id, marked.hold, slot_id="dear", until_ms=until, hold_until_ms=until)
    scenario.clock.advance(61)
    await store.expire_tag(scenario.tag)
    expired = await store.get_hold(new_id)
    assert expired is not None
    assert expired.state is HoldState.EXPIRED
    await store.mark_move("abort", old_id, new_id, until_ms=-1)
    old = await store.get_hold(old_id)
    assert old is not None
    assert old.state is HoldState.BOOKED
    assert not old.moving_to
    counts = await store.slot_counts(scenario.tag, ["cheap", "dear"])
    assert counts == {"cheap": SlotCounts(1, 0, 0, 1, 0), "dear": SlotCounts(1, 1, 0, 0, 0)}
