"""The 候补 waitlist's steps against a real Redis: join, leave, and the offers every step
that frees a unit makes to the first waiting patient in that same step (release,
expiry, the end of the anti-scalping wait, 加号, reopen, a larger capacity loaded)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from inventory import errors
from inventory.domain import (
    HoldState,
    HospitalPolicy,
    SlotCounts,
    WaitlistJoin,
    WaitlistOutcome,
    WaitlistState,
)
from inventory.store import keys
from inventory.store.waitlist import WaitlistStore

from .conftest import START, ManualClock, Scenario, fresh_id, make_store


def join_request(scenario: Scenario, schedule_id: str, **kwargs: Any) -> WaitlistJoin:
    return WaitlistJoin(
        hospital_id=scenario.hospital_id,
        department_id=scenario.department_id,
        visit_date=scenario.visit_date,
        schedule_id=schedule_id,
        account_id=kwargs.get("account_id") or fresh_id("a"),
        patient_id=kwargs.get("patient_id") or fresh_id("p"),
        channel="wechat",
        idempotency_key=kwargs.get("key") or fresh_id("k"),
    )


async def events(scenario: Scenario) -> list[dict[str, str]]:
    return [fields for _, fields in await scenario.client.xrange(scenario.tag_keys.outbox)]


async def sold_out(
    scenario: Scenario, capacity: int = 1, slot: str = "slot-a"
) -> tuple[str, list[str]]:
    """A schedule of one slot whose every unit is held: (schedule, hold ids)."""
    spec = scenario.schedule({slot: capacity})
    await scenario.store.load_schedule(spec)
    holds = [(await scenario.store.reserve(scenario.request(slot))).hold for _ in range(capacity)]
    return spec.schedule_id, [h.hold_id for h in holds]


@pytest.fixture
def waitlist(scenario: Scenario) -> WaitlistStore:
    return WaitlistStore(scenario.store)


async def test_join_refused_while_a_unit_is_free(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """A schedule with a free unit has no waitlist: reserve it instead."""
    spec = scenario.schedule({"slot-a": 1})
    await scenario.store.load_schedule(spec)
    with pytest.raises(errors.WaitlistUnitsFreeError) as refused:
        await waitlist.join(join_request(scenario, spec.schedule_id))
    assert refused.value.context["slot_id"] == "slot-a"


async def test_join_queues_in_order_and_replays(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """Joiners get positions 1, 2, ...; the same key, or the same patient again, answers
    the same entry; the event says who joined where."""
    schedule_id, _ = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id, key="k1"))
    second = await waitlist.join(join_request(scenario, schedule_id))
    assert (first.position, second.position) == (1, 2)
    assert first.entry.state is WaitlistState.WAITING
    again = await waitlist.join(
        join_request(
            scenario,
            schedule_id,
            key="k1",
            account_id=first.entry.account_id,
            patient_id=first.entry.patient_id,
        )
    )
    assert again.replayed
    assert again.entry == first.entry
    assert again.position == 1
    other_key = await waitlist.join(
        join_request(
            scenario,
            schedule_id,
            account_id=second.entry.account_id,
            patient_id=second.entry.patient_id,
        )
    )
    assert other_key.replayed
    assert other_key.entry.entry_id == second.entry.entry_id
    joined = [e for e in await events(scenario) if e["type"] == "waitlist_joined"]
    assert [(e["entry"], e["position"]) for e in joined] == [
        (first.entry.entry_id, "1"),
        (second.entry.entry_id, "2"),
    ]
    # Neither replay left a token behind for its own key.
    assert list(await waitlist.patient_entries(second.entry.patient_id)) == [second.entry.entry_id]


async def test_key_reused_for_another_schedule(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """An idempotency key names one join: another schedule with it is refused."""
    schedule_a, _ = await sold_out(scenario, slot="slot-a")
    schedule_b, _ = await sold_out(scenario, slot="slot-b")
    request = join_request(scenario, schedule_a, key="same")
    await waitlist.join(request)
    with pytest.raises(errors.IdempotencyKeyReusedError):
        await waitlist.join(replace(request, schedule_id=schedule_b))


async def test_release_offers_the_unit_to_the_first_in_line(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """A released hold's unit becomes a hold for the first waiting patient in the same
    step, with the offer's own deadline; the second moves up to position 1."""
    schedule_id, (hold_id,) = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id))
    second = await waitlist.join(join_request(scenario, schedule_id))
    await scenario.store.release(hold_id, account_id="", reason="patient_released")
    offer = await scenario.store.get_hold(first.entry.offer_hold_id)
    assert offer is not None
    assert offer.state is HoldState.HELD
    assert offer.patient_id == first.entry.patient_id
    assert offer.account_id == first.entry.account_id
    assert offer.deadline_ms == scenario.clock.now_ms + HospitalPolicy().waitlist_offer_s * 1000
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(1, 0, 1, 0, 0)
    entry = await waitlist.entry(first.entry.entry_id)
    assert entry is not None
    assert entry.state is WaitlistState.OFFERED
    assert entry.slot_id == "slot-a"
    second_now = await waitlist.entry(second.entry.entry_id)
    assert second_now is not None
    assert await waitlist.position(second_now) == 1
    types = [e["type"] for e in await events(scenario)]
    assert types[-2:] == ["hold_released", "waitlist_offered"]
    offered = (await events(scenario))[-1]
    assert offered["hold"] == offer.hold_id
    assert offered["entry"] == first.entry.entry_id
    assert offered["deadline"] == str(offer.deadline_ms)
    assert offered["rem"] == "0"
    assert offered["held"] == "1"


async def test_unpaid_offer_lapses_to_the_next(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """An offer past its deadline expires (the expirer's sweep): its entry lapses and
    the unit goes to the next waiting patient in the same step."""
    schedule_id, (hold_id,) = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id))
    second = await waitlist.join(join_request(scenario, schedule_id))
    await scenario.store.release(hold_id, account_id="", reason="patient_released")
    scenario.clock.advance(HospitalPolicy().waitlist_offer_s)
    await scenario.store.expire_tag(scenario.tag)
    lapsed = await waitlist.entry(first.entry.entry_id)
    assert lapsed is not None
    assert lapsed.state is WaitlistState.LAPSED
    offered = await waitlist.entry(second.entry.entry_id)
    assert offered is not None
    assert offered.state is WaitlistState.OFFERED
    types = [e["type"] for e in await events(scenario)]
    assert types[-3:] == ["hold_expired", "waitlist_lapsed", "waitlist_offered"]


async def test_paid_offer_is_taken(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """Confirming the offer's hold books it and marks the entry taken."""
    schedule_id, (hold_id,) = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id))
    await scenario.store.release(hold_id, account_id="", reason="patient_released")
    outcome = await scenario.store.confirm(
        first.entry.offer_hold_id, account_id=first.entry.account_id, payment_ref="pay-1"
    )
    assert outcome.hold.state is HoldState.BOOKED
    entry = await waitlist.entry(first.entry.entry_id)
    assert entry is not None
    assert entry.state is WaitlistState.TAKEN
    assert [e["type"] for e in await events(scenario)][-2:] == [
        "booking_confirmed",
        "waitlist_taken",
    ]


async def test_declined_offer_passes_on(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """The patient gives the offer's hold back: declined, and the next gets the unit."""
    schedule_id, (hold_id,) = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id))
    second = await waitlist.join(join_request(scenario, schedule_id))
    await scenario.store.release(hold_id, account_id="", reason="patient_released")
    await scenario.store.release(
        first.entry.offer_hold_id, account_id=first.entry.account_id, reason="patient_released"
    )
    entry = await waitlist.entry(first.entry.entry_id)
    assert entry is not None
    assert entry.state is WaitlistState.DECLINED
    nxt = await waitlist.entry(second.entry.entry_id)
    assert nxt is not None
    assert nxt.state is WaitlistState.OFFERED


async def test_leave_waiting_and_offered(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """Leaving while waiting takes the entry out of the queue (never offered after);
    leaving with an offer gives its unit to the next; leaving again replays; another
    account's entry is not found."""
    schedule_id, (hold_id,) = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id))
    second = await waitlist.join(join_request(scenario, schedule_id))
    third = await waitlist.join(join_request(scenario, schedule_id))
    with pytest.raises(errors.WaitlistEntryNotFoundError):
        await waitlist.leave(first.entry.entry_id, account_id="someone-else")
    left = await waitlist.leave(first.entry.entry_id, account_id=first.entry.account_id)
    assert left.entry.state is WaitlistState.LEFT
    assert not left.replayed
    assert not await waitlist.patient_entries(first.entry.patient_id)
    await scenario.store.release(hold_id, account_id="", reason="patient_released")
    assert await scenario.store.get_hold(first.entry.offer_hold_id) is None
    offered = await waitlist.entry(second.entry.entry_id)
    assert offered is not None
    assert offered.state is WaitlistState.OFFERED
    gone = await waitlist.leave(second.entry.entry_id, account_id=second.entry.account_id)
    assert gone.entry.state is WaitlistState.LEFT
    released = await scenario.store.get_hold(second.entry.offer_hold_id)
    assert released is not None
    assert released.state is HoldState.RELEASED
    now_third = await waitlist.entry(third.entry.entry_id)
    assert now_third is not None
    assert now_third.state is WaitlistState.OFFERED
    again = await waitlist.leave(second.entry.entry_id, account_id=second.entry.account_id)
    assert again.replayed
    assert again.entry.state is WaitlistState.LEFT


async def test_capacity_added_and_reopen_offer(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """加号 offers the added units in the same step; units free while the schedule was
    suspended are offered when it reopens."""
    schedule_id, (hold_id,) = await sold_out(scenario)
    entries = [await waitlist.join(join_request(scenario, schedule_id)) for _ in range(3)]
    counts = await scenario.store.adjust_capacity(scenario.tag, "slot-a", 2)
    assert counts == SlotCounts(3, 0, 3, 0, 0)
    states = [
        (await waitlist.entry(e.entry.entry_id)).state  # type: ignore[union-attr]
        for e in entries
    ]
    assert states == [WaitlistState.OFFERED, WaitlistState.OFFERED, WaitlistState.WAITING]
    await scenario.store.suspend(scenario.tag, schedule_id, "doctor_unavailable")
    await scenario.store.release(hold_id, account_id="", reason="suspended", force=True)
    last = await waitlist.entry(entries[2].entry.entry_id)
    assert last is not None
    assert last.state is WaitlistState.WAITING
    await scenario.store.reopen(scenario.tag, schedule_id, "doctor_back")
    last = await waitlist.entry(entries[2].entry.entry_id)
    assert last is not None
    assert last.state is WaitlistState.OFFERED


async def test_anti_scalping_wait_ends_in_an_offer(redis_client: Any, clock: ManualClock) -> None:
    """Under the anti-scalping delay a freed unit waits first; when the wait ends it is
    offered, not put up for anyone's reserve."""
    policy = HospitalPolicy(rerelease_min_s=60, rerelease_max_s=60)
    scenario = Scenario(await make_store(redis_client, clock, policy), clock, redis_client)
    waitlist = WaitlistStore(scenario.store)
    schedule_id, (hold_id,) = await sold_out(scenario)
    first = await waitlist.join(join_request(scenario, schedule_id))
    await scenario.store.release(hold_id, account_id="", reason="patient_released")
    entry = await waitlist.entry(first.entry.entry_id)
    assert entry is not None
    assert entry.state is WaitlistState.WAITING
    clock.advance(60)
    await scenario.store.expire_tag(scenario.tag)
    entry = await waitlist.entry(first.entry.entry_id)
    assert entry is not None
    assert entry.state is WaitlistState.OFFERED
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(1, 0, 1, 0, 0)


async def test_one_per_day_passes_over_a_patient_with_a_hold(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """A waiting patient who holds another unit in the department that day is passed
    over (refused) and the unit goes to the next; joining with such a hold is refused."""
    spec = scenario.schedule({"slot-a": 1, "slot-b": 1})
    await scenario.store.load_schedule(spec)
    other = scenario.schedule({"slot-c": 5})
    await scenario.store.load_schedule(other)
    held = (await scenario.store.reserve(scenario.request("slot-a"))).hold
    await scenario.store.reserve(scenario.request("slot-b"))
    busy, free = fresh_id("p"), fresh_id("p")
    first = await waitlist.join(join_request(scenario, spec.schedule_id, patient_id=busy))
    second = await waitlist.join(join_request(scenario, spec.schedule_id, patient_id=free))
    await scenario.store.reserve(scenario.request("slot-c", patient_id=busy))
    with pytest.raises(errors.PatientRuleError) as refused:
        await waitlist.join(join_request(scenario, spec.schedule_id, patient_id=busy, key="k2"))
    assert refused.value.context["rule"] == "one_per_day"
    await scenario.store.release(held.hold_id, account_id="", reason="patient_released")
    passed = await waitlist.entry(first.entry.entry_id)
    assert passed is not None
    assert passed.state is WaitlistState.REFUSED
    assert passed.end_reason == "one_per_day"
    offered = await waitlist.entry(second.entry.entry_id)
    assert offered is not None
    assert offered.state is WaitlistState.OFFERED


async def test_waitlist_limit_per_patient(redis_client: Any, clock: ManualClock) -> None:
    """At most N entries per patient across schedules; leaving one makes room."""
    policy = HospitalPolicy(waitlist_max_per_patient=2)
    scenario = Scenario(await make_store(redis_client, clock, policy), clock, redis_client)
    waitlist = WaitlistStore(scenario.store)
    patient = fresh_id("p")
    schedules = [(await sold_out(scenario, slot=f"slot-{i}"))[0] for i in range(3)]
    entries = [
        await waitlist.join(join_request(scenario, s, patient_id=patient, account_id="acct"))
        for s in schedules[:2]
    ]
    with pytest.raises(errors.WaitlistLimitError):
        await waitlist.join(join_request(scenario, schedules[2], patient_id=patient))
    await waitlist.leave(entries[0].entry.entry_id, account_id="acct")
    third = await waitlist.join(join_request(scenario, schedules[2], patient_id=patient))
    assert third.entry.state is WaitlistState.WAITING


async def test_join_refused_before_release_and_when_suspended(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """Not released, suspended, past or unknown schedules have no waitlist to join."""
    spec = scenario.schedule({"slot-a": 0}, release_at=START + timedelta(hours=1))
    await scenario.store.load_schedule(spec)
    with pytest.raises(errors.NotReleasedError):
        await waitlist.join(join_request(scenario, spec.schedule_id))
    with pytest.raises(errors.ScheduleNotFoundError):
        await waitlist.join(join_request(scenario, "no-such-schedule"))
    open_spec = scenario.schedule({"slot-a2": 0})
    await scenario.store.load_schedule(open_spec)
    await scenario.store.suspend(scenario.tag, open_spec.schedule_id, "doctor_unavailable")
    with pytest.raises(errors.ScheduleSuspendedError):
        await waitlist.join(join_request(scenario, open_spec.schedule_id))


async def test_offers_under_patient_tag_rules_wait_for_the_settler(
    redis_client: Any, clock: ManualClock
) -> None:
    """Under rules on the patient's tag an offer is made unsettled; paying it settles it
    first (the patient's token taken); a banned patient's offer is refused on settling,
    released, and its unit offered to the next in the same step."""
    policy = HospitalPolicy(blacklist=True, max_open_per_patient=3)
    scenario = Scenario(await make_store(redis_client, clock, policy), clock, redis_client)
    store = scenario.store
    waitlist = WaitlistStore(store)
    schedule_id, hold_ids = await sold_out(scenario, capacity=2)
    banned = fresh_id("p")
    entries = [
        await waitlist.join(join_request(scenario, schedule_id, patient_id=patient))
        for patient in (fresh_id("p"), banned, fresh_id("p"))
    ]
    await store.ban_patient(
        banned, hospital_id=scenario.hospital_id, until_ms=clock.now_ms + 86_400_000, reason="x"
    )
    for hold_id in hold_ids:
        await store.release(hold_id, account_id="", reason="patient_released")
    first, second, third = (e.entry for e in entries)
    assert set(await store.unsettled_offers(scenario.tag)) == {
        first.offer_hold_id,
        second.offer_hold_id,
    }
    # Paid before the worker came by: settled on the way, then booked.
    booked = await store.confirm(first.offer_hold_id, account_id=first.account_id, payment_ref="p1")
    assert booked.hold.state is HoldState.BOOKED
    assert (await store.patient_tokens(first.patient_id)) == {first.offer_hold_id: float("inf")}
    # The banned patient's offer: refused by the settler, the unit goes to the third.
    assert await store.settle_offer(second.offer_hold_id) == "refused"
    refused = await waitlist.entry(second.entry_id)
    assert refused is not None
    assert refused.state is WaitlistState.REFUSED
    assert refused.end_reason == "blacklisted"
    offered = await waitlist.entry(third.entry_id)
    assert offered is not None
    assert offered.state is WaitlistState.OFFERED
    assert await store.unsettled_offers(scenario.tag) == [third.offer_hold_id]
    assert await store.settle_offer(third.offer_hold_id) == "settled"
    assert await store.settle_offer(third.offer_hold_id) == "gone"
    assert await store.unsettled_offers(scenario.tag) == []
    counts = await store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(2, 0, 1, 1, 0)


async def test_settling_after_a_crash_between_the_steps(
    redis_client: Any, clock: ManualClock
) -> None:
    """A settler that died after taking the patient's token (step one) and before
    telling the tag leaves a pending token and an unsettled offer: the next settle
    replays the token, settles it and clears the offer; nothing is held twice."""
    policy = HospitalPolicy(max_open_per_patient=1)
    scenario = Scenario(await make_store(redis_client, clock, policy), clock, redis_client)
    store = scenario.store
    waitlist = WaitlistStore(store)
    schedule_id, (hold_id,) = await sold_out(scenario)
    entry = (await waitlist.join(join_request(scenario, schedule_id))).entry
    await store.release(hold_id, account_id="", reason="patient_released")
    await store.acquire_patient_item(
        keys.patient_keys(entry.patient_id),
        entry.offer_hold_id,
        hospital_id=scenario.hospital_id,
        max_items=1,
        policy=policy,
        reap=lambda ids: store.reap_patient_tokens(entry.patient_id, ids),
    )
    tokens = await store.patient_tokens(entry.patient_id)
    assert tokens[entry.offer_hold_id] != float("inf")  # pending: the crash point
    assert await store.settle_offer(entry.offer_hold_id) == "settled"
    assert await store.patient_tokens(entry.patient_id) == {entry.offer_hold_id: float("inf")}
    assert await store.unsettled_offers(scenario.tag) == []
    counts = await store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(1, 0, 1, 0, 0)


async def test_a_waiting_room_still_admitting_comes_first(
    scenario: Scenario, waitlist: WaitlistStore
) -> None:
    """While a queued release's room governs the schedule, joining the waitlist is
    refused (join the room) and a freed unit is not offered; once the room is done
    (sold out: the schedule no longer names it) the next freed unit is."""
    schedule_id, (first_hold, second_hold) = await sold_out(scenario, capacity=2)
    entry = (await waitlist.join(join_request(scenario, schedule_id))).entry
    await scenario.client.hset(scenario.tag_keys.schedules, f"{schedule_id}:room", "rel-1")
    with pytest.raises(errors.AdmissionRequiredError) as refused:
        await waitlist.join(join_request(scenario, schedule_id))
    assert refused.value.context["release_id"] == "rel-1"
    await scenario.store.release(first_hold, account_id="", reason="patient_released")
    waiting = await waitlist.entry(entry.entry_id)
    assert waiting is not None
    assert waiting.state is WaitlistState.WAITING
    await scenario.client.hdel(scenario.tag_keys.schedules, f"{schedule_id}:room")
    await scenario.store.release(second_hold, account_id="", reason="patient_released")
    offered = await waitlist.entry(entry.entry_id)
    assert offered is not None
    assert offered.state is WaitlistState.OFFERED


async def test_many_cancels_and_joins_at_once(scenario: Scenario, waitlist: WaitlistStore) -> None:
    """30 holders give their units back while 30 more patients join, 10 already in
    line, all at once: no unit is held twice, every unit freed while someone waited went
    to the line in join order, and no unit is left free while a patient waits."""
    capacity = 30
    schedule_id, hold_ids = await sold_out(scenario, capacity=capacity)
    store = scenario.store
    early = [await waitlist.join(join_request(scenario, schedule_id)) for _ in range(10)]
    releases = [
        store.release(hold_id, account_id="", reason="patient_released") for hold_id in hold_ids
    ]
    joins = [waitlist.join(join_request(scenario, schedule_id)) for _ in range(capacity)]
    steps: list[Any] = []
    for join, release in zip(joins, releases, strict=True):
        steps += [join, release]
    answers = await asyncio.gather(*steps, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert all(isinstance(a, errors.WaitlistUnitsFreeError) for a in refused), refused
    joined = [o.entry.entry_id for o in early] + [
        a.entry.entry_id for a in answers if isinstance(a, WaitlistOutcome)
    ]
    entries = [await waitlist.entry(entry_id) for entry_id in joined]
    assert all(e is not None for e in entries)
    counts = (await store.slot_counts(scenario.tag, ["slot-a"]))["slot-a"]
    assert counts.conserved
    holds = await scenario.client.hgetall(scenario.tag_keys.holds)
    open_holds = [h for h in holds.values() if '"state":"held"' in h]
    assert len(open_holds) == counts.held <= capacity
    offered = sorted(e.seq for e in entries if e is not None and e.offered_ms)
    waiting = sorted(e.seq for e in entries if e is not None and not e.offered_ms)
    assert offered
    if waiting:
        assert counts.remaining == 0
        assert max(offered) < min(waiting)
    assert len(offered) + counts.remaining == capacity
