"""The store under concurrency, on standalone Redis and a 3-master Cluster: no unit sold
twice, patient rules hold when a patient's attempts race, and the two-step reservation's
leftovers from a crashed process are cleaned up."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from inventory import errors
from inventory.domain import HoldOutcome, HospitalPolicy, SlotCounts
from inventory.store import keys
from inventory.store.slot_store import TOKEN_CLOCK_MARGIN_MS, SlotStore

from .conftest import VISIT_DATE, ManualClock, Scenario, fresh_id, make_store

T = TypeVar("T")

#: Calls in flight at once. Every call is released together from one Event; this only
#: keeps the Cluster client (max_connections=256 per node, and it raises instead of
#: waiting when they are all taken) inside its pool. The standalone pool has 64.
IN_FLIGHT = 200


async def release_together(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T | BaseException]:
    """Start every call, hold them all at one gate, open it, and gather the results."""
    gate, all_waiting = asyncio.Event(), asyncio.Event()
    in_flight = asyncio.Semaphore(IN_FLIGHT)
    waiting = 0

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        nonlocal waiting
        waiting += 1
        if waiting == len(calls):
            all_waiting.set()
        await gate.wait()
        async with in_flight:
            return await call()

    tasks = [asyncio.create_task(one(call)) for call in calls]
    await all_waiting.wait()
    gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def split(
    results: Sequence[HoldOutcome | BaseException],
) -> tuple[list[HoldOutcome], list[BaseException]]:
    """Successes and failures; anything that is neither an outcome nor an error fails."""
    wins = [r for r in results if isinstance(r, HoldOutcome)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) + len(losses) == len(results)
    return wins, losses


def unexpected(losses: Sequence[BaseException], *allowed: type[BaseException]) -> list[str]:
    """The failures that are not one of ``allowed``, described."""
    return [repr(e) for e in losses if not isinstance(e, allowed)]


async def hold_created_count(client: Any, tag: str, slot_id: str) -> int:
    entries = await client.xrange(keys.tag_keys(tag).outbox)
    return sum(1 for _, f in entries if f["type"] == "hold_created" and f.get("slot") == slot_id)


async def open_slots(scenario: Scenario, capacities: dict[str, int]) -> None:
    await scenario.store.load_schedule(scenario.schedule(capacities))


@pytest.mark.parametrize("capacity", [1, 10, 100])
async def test_storm_sells_exactly_capacity(scenario: Scenario, capacity: int) -> None:
    """2,000 concurrent reserves of one slot: exactly min(2000, M) holds, the rest sold out."""
    attempts = 2000
    await open_slots(scenario, {"hot": capacity})
    store = scenario.store
    calls = [lambda: store.reserve(scenario.request("hot")) for _ in range(attempts)]

    wins, losses = split(await release_together(calls))

    expected = min(attempts, capacity)
    assert len(wins) == expected
    assert unexpected(losses, errors.SoldOutError) == []
    assert len({w.hold.hold_id for w in wins}) == expected
    assert len({w.event_id for w in wins}) == expected
    counts = (await store.slot_counts(scenario.tag, ["hot"]))["hot"]
    assert counts == SlotCounts(
        capacity=capacity, remaining=capacity - expected, held=expected, booked=0, waiting=0
    )
    assert counts.conserved
    assert await hold_created_count(scenario.client, scenario.tag, "hot") == capacity


async def test_one_patient_racing_over_slots_of_a_day_gets_one(scenario: Scenario) -> None:
    """One patient's 200 concurrent reserves over 10 slots of one department-day: one hold."""
    slots = [f"slot-{i}" for i in range(10)]
    await open_slots(scenario, dict.fromkeys(slots, 1000))
    patient, account = fresh_id("p"), fresh_id("a")
    store = scenario.store
    requests = [
        scenario.request(slots[i % len(slots)], patient_id=patient, account_id=account)
        for i in range(200)
    ]
    calls = [lambda r=r: store.reserve(r) for r in requests]

    wins, losses = split(await release_together(calls))

    assert len(wins) == 1  # the first to run finds nothing open, so exactly one
    assert unexpected(losses, errors.PatientRuleError) == []
    assert {e.context.get("rule") for e in losses if isinstance(e, errors.InventoryError)} == {
        "one_per_day"
    }
    counts = await store.slot_counts(scenario.tag, slots)
    assert sum(c.held for c in counts.values()) == 1
    assert all(c.conserved for c in counts.values())


async def test_cross_tag_limit_holds_under_concurrency(
    redis_client: Any, clock: ManualClock
) -> None:
    """max_open_per_patient=2: 100 concurrent reserves over 5 tags give at most 2 holds,
    and the patient keeps exactly one settled token per hold."""
    store = await make_store(redis_client, clock, HospitalPolicy(max_open_per_patient=2))
    hospital = fresh_id("h")
    tags = [Scenario(store, clock, redis_client, hospital_id=hospital) for _ in range(5)]
    for sc in tags:
        await open_slots(sc, {"slot-a": 100})
    patient, account = fresh_id("p"), fresh_id("a")
    requests = [
        tags[i % len(tags)].request("slot-a", patient_id=patient, account_id=account)
        for i in range(100)
    ]
    calls = [lambda r=r: store.reserve(r) for r in requests]

    wins, losses = split(await release_together(calls))

    assert 1 <= len(wins) <= 2
    assert unexpected(losses, errors.PatientRuleError) == []
    rules = {e.context.get("rule") for e in losses if isinstance(e, errors.InventoryError)}
    assert rules <= {"max_open", "one_per_day"}
    assert len({keys.tag_of_hold(w.hold.hold_id) for w in wins}) == len(wins)
    tokens = await store.patient_tokens(patient)
    assert tokens == {w.hold.hold_id: math.inf for w in wins}
    held = 0
    for sc in tags:
        counts = (await store.slot_counts(sc.tag, ["slot-a"]))["slot-a"]
        assert counts.conserved
        held += counts.held
    assert held == len(wins)


async def acquire_token(
    store: SlotStore,
    clock: ManualClock,
    policy: HospitalPolicy,
    patient: str,
    hold_id: str,
    hospital: str,
) -> int:
    """Step one of the two-step reservation alone, as a process that then dies would run
    it; returns the pending token's deadline (ms)."""
    reply = await store.scripts["patient_acquire"](
        keys=keys.patient_keys(patient).as_list(),
        args=[
            clock(),
            hold_id,
            hospital,
            policy.max_open_per_patient,
            policy.token_window_s * 1000,
        ],
    )
    assert int(reply[0]) == errors.LUA_OK
    return int(float(reply[1]))


async def test_token_of_a_crash_before_reserve_is_reaped_after_its_window(
    redis_client: Any, clock: ManualClock
) -> None:
    """A pending token whose reserve never ran blocks the patient until its window plus
    the clock margin is over; then the next reserve reaps it and succeeds."""
    policy = HospitalPolicy(max_open_per_patient=1)
    store = await make_store(redis_client, clock, policy)
    sc = Scenario(store, clock, redis_client)
    await open_slots(sc, {"slot-a": 10})
    patient, account = fresh_id("p"), fresh_id("a")
    dead_hold = keys.hold_id_for(account, "crashed-before-reserve", sc.tag)
    deadline = await acquire_token(store, clock, policy, patient, dead_hold, sc.hospital_id)
    assert deadline == clock() + policy.token_window_s * 1000

    with pytest.raises(errors.PatientRuleError) as refused:
        await store.reserve(sc.request("slot-a", patient_id=patient, account_id=account))
    assert refused.value.context["rule"] == "max_open"

    clock.now_ms = deadline + TOKEN_CLOCK_MARGIN_MS  # the margin is not over yet
    with pytest.raises(errors.PatientRuleError):
        await store.reserve(sc.request("slot-a", patient_id=patient, account_id=account))
    assert await store.patient_tokens(patient) == {dead_hold: deadline}

    clock.advance(0.001)
    outcome = await store.reserve(sc.request("slot-a", patient_id=patient, account_id=account))
    assert await store.patient_tokens(patient) == {outcome.hold.hold_id: math.inf}
    assert await store.get_hold(dead_hold) is None
    counts = (await store.slot_counts(sc.tag, ["slot-a"]))["slot-a"]
    assert (counts.held, counts.conserved) == (1, True)


async def test_token_of_a_crash_before_settle_is_settled_then_reaped_when_hold_ends(
    redis_client: Any, clock: ManualClock
) -> None:
    """A hold reserved but never settled keeps its token (settled by the reaper, however
    late), and the token is dropped once the hold has ended."""
    policy = HospitalPolicy(max_open_per_patient=1)
    store = await make_store(redis_client, clock, policy)
    # The same scripts without rules that span tags: runs the reserve step alone.
    plain = SlotStore(redis_client, store.scripts, clock=clock)
    hospital = fresh_id("h")
    first, second = (Scenario(store, clock, redis_client, hospital_id=hospital) for _ in range(2))
    await open_slots(first, {"slot-a": 10})
    await open_slots(second, {"slot-a": 10})
    patient, account = fresh_id("p"), fresh_id("a")
    request = first.request("slot-a", patient_id=patient, account_id=account, key="died")
    hold_id = keys.hold_id_for(account, "died", first.tag)
    deadline = await acquire_token(store, clock, policy, patient, hold_id, hospital)
    held = await plain.reserve(request)  # step two ran; the process died before settling
    assert held.hold.hold_id == hold_id
    assert await store.patient_tokens(patient) == {hold_id: deadline}

    clock.now_ms = deadline + TOKEN_CLOCK_MARGIN_MS + 1  # past the window: still counts
    with pytest.raises(errors.PatientRuleError) as refused:
        await store.reserve(second.request("slot-a", patient_id=patient, account_id=account))
    assert refused.value.context["rule"] == "max_open"
    assert await store.patient_tokens(patient) == {hold_id: math.inf}  # reaper settled it
    assert await store.reap_patient_tokens(patient, [hold_id]) == 0

    clock.now_ms = held.hold.deadline_ms  # the hold is past its deadline: it has ended
    outcome = await store.reserve(second.request("slot-a", patient_id=patient, account_id=account))
    assert await store.patient_tokens(patient) == {outcome.hold.hold_id: math.inf}


async def test_7_day_limit_holds_under_concurrency(redis_client: Any, clock: ManualClock) -> None:
    """max_in_7_days_per_patient=2 over 10 consecutive visit days: 200 concurrent
    reserves leave no 7 consecutive days with more than 2 of the patient's holds, and
    one settled token per hold."""
    policy = HospitalPolicy(max_in_7_days_per_patient=2)
    store = await make_store(redis_client, clock, policy)
    hospital, department = fresh_id("h"), fresh_id("d")
    days = [
        Scenario(
            store,
            clock,
            redis_client,
            hospital_id=hospital,
            department_id=department,
            visit_date=VISIT_DATE + timedelta(days=i),
        )
        for i in range(10)
    ]
    for sc in days:
        await open_slots(sc, {"slot-a": 100})
    patient, account = fresh_id("p"), fresh_id("a")
    requests = [
        days[i % len(days)].request("slot-a", patient_id=patient, account_id=account)
        for i in range(200)
    ]
    calls = [lambda r=r: store.reserve(r) for r in requests]

    wins, losses = split(await release_together(calls))

    assert unexpected(losses, errors.PatientRuleError, errors.PatientWeeklyLimitError) == []
    assert any(isinstance(e, errors.PatientWeeklyLimitError) for e in losses)
    visit_days = sorted(keys.visit_date_of_tag(keys.tag_of_hold(w.hold.hold_id)) for w in wins)
    assert 1 <= len(visit_days) <= 4  # days 0, 1, 7 and 8 at most
    for first in visit_days:
        assert sum(first <= d <= first + timedelta(days=6) for d in visit_days) <= 2
    assert await store.patient_tokens(patient) == {w.hold.hold_id: math.inf for w in wins}
    held = 0
    for sc in days:
        counts = (await store.slot_counts(sc.tag, ["slot-a"]))["slot-a"]
        assert counts.conserved
        held += counts.held
    assert held == len(wins)


async def test_7_day_limit_counts_a_crashed_step_until_reaped(
    redis_client: Any, clock: ManualClock
) -> None:
    """A pending token of a reserve whose process died counts for the 7-day rule until
    its window (plus the clock margin) is over; then it is reaped and the patient books.
    Tokens of visit days 7 or more days apart never count together."""
    policy = HospitalPolicy(max_in_7_days_per_patient=1)
    store = await make_store(redis_client, clock, policy)
    hospital, department = fresh_id("h"), fresh_id("d")
    here = Scenario(store, clock, redis_client, hospital_id=hospital, department_id=department)
    await open_slots(here, {"slot-a": 10})
    patient, account = fresh_id("p"), fresh_id("a")
    six_days_on = keys.department_day_tag(department, VISIT_DATE + timedelta(days=6))
    dead_hold = keys.hold_id_for(account, "crashed-before-reserve", six_days_on)
    deadline, fresh = await store.acquire_patient_token(patient, dead_hold, hospital_id=hospital)
    assert fresh

    with pytest.raises(errors.PatientWeeklyLimitError) as refused:
        await store.reserve(here.request("slot-a", patient_id=patient, account_id=account))
    assert refused.value.context == {"rule": "max_in_7_days", "limit": 1}

    clock.now_ms = deadline + TOKEN_CLOCK_MARGIN_MS + 1
    outcome = await store.reserve(here.request("slot-a", patient_id=patient, account_id=account))
    assert await store.patient_tokens(patient) == {outcome.hold.hold_id: math.inf}

    # Seven days later is another window: a token there is taken beside this booking.
    week_on = keys.department_day_tag(department, VISIT_DATE + timedelta(days=7))
    later = keys.hold_id_for(account, "a-week-on", week_on)
    assert (await store.acquire_patient_token(patient, later, hospital_id=hospital))[1]
