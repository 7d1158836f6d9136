"""Each script step against a real Redis: every return code, the keys it leaves,
their TTLs and the outbox entry it appends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from inventory import errors
from inventory.domain import HoldState, HospitalPolicy, SlotCounts
from inventory.store import keys
from inventory.store.keys import hold_id_for

from .conftest import START, Scenario, make_store


async def outbox(scenario: Scenario) -> list[dict[str, str]]:
    entries = await scenario.client.xrange(scenario.tag_keys.outbox)
    return [fields for _, fields in entries]


async def open_slot(scenario: Scenario, capacity: int = 2, **kwargs: Any) -> str:
    spec = scenario.schedule({"slot-a": capacity}, **kwargs)
    await scenario.store.load_schedule(spec)
    return spec.schedule_id


async def test_load_schedule_sets_counts_and_emits(scenario: Scenario) -> None:
    """A new schedule's slots start with remaining = capacity; the event lists them."""
    spec = scenario.schedule({"slot-a": 3, "slot-b": 0})
    event_id = await scenario.store.load_schedule(spec)
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a", "slot-b", "nope"])
    assert counts == {"slot-a": SlotCounts(3, 3, 0, 0, 0), "slot-b": SlotCounts(0, 0, 0, 0, 0)}
    (event,) = await scenario.client.xrange(scenario.tag_keys.outbox)
    assert event[0] == event_id
    assert event[1]["type"] == "schedule_loaded"
    assert event[1]["seq"] == "1"
    assert event[1]["status"] == "open"


async def test_load_schedule_changes_capacity_by_delta(scenario: Scenario) -> None:
    """Reloading moves remaining by the change in capacity and keeps what is taken."""
    spec = scenario.schedule({"slot-a": 2})
    await scenario.store.load_schedule(spec)
    await scenario.store.reserve(scenario.request("slot-a"))
    await scenario.store.load_schedule(
        scenario.schedule({"slot-a": 5}, schedule_id=spec.schedule_id)
    )
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(5, 4, 1, 0, 0)


async def test_load_schedule_refuses_capacity_below_taken(scenario: Scenario) -> None:
    """Capacity cannot drop below held + booked; nothing of the reload is written."""
    spec = scenario.schedule({"slot-a": 1, "slot-b": 1})
    await scenario.store.load_schedule(spec)
    await scenario.store.reserve(scenario.request("slot-a"))
    shrink = scenario.schedule({"slot-b": 7, "slot-a": 0}, schedule_id=spec.schedule_id)
    with pytest.raises(errors.CapacityBelowTakenError):
        await scenario.store.load_schedule(shrink)
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a", "slot-b"])
    assert counts["slot-b"].capacity == 1  # the earlier slot-b change was not applied


async def test_load_schedule_refuses_slot_of_another_schedule(scenario: Scenario) -> None:
    """A slot id belongs to one schedule."""
    await scenario.store.load_schedule(scenario.schedule({"slot-a": 1}))
    with pytest.raises(errors.SlotScheduleMismatchError):
        await scenario.store.load_schedule(scenario.schedule({"slot-a": 1}))


async def test_reserve_creates_hold_with_deadline(scenario: Scenario) -> None:
    """Reserve takes a unit: counts move, the hold is recorded, an event is appended."""
    await open_slot(scenario)
    request = scenario.request("slot-a")
    outcome = await scenario.store.reserve(request)
    hold = outcome.hold
    assert hold.hold_id == hold_id_for(request.account_id, request.idempotency_key, scenario.tag)
    assert hold.state is HoldState.HELD
    assert hold.deadline_ms == scenario.clock.now_ms + 15 * 60 * 1000
    assert hold.amount_fen == 5000
    assert outcome.counts == SlotCounts(2, 1, 1, 0, 0)
    assert not outcome.replayed
    events = await outbox(scenario)
    assert events[-1]["type"] == "hold_created"
    assert events[-1]["hold"] == hold.hold_id
    assert (events[-1]["rem"], events[-1]["held"], events[-1]["cap"]) == ("1", "1", "2")
    assert events[-1]["seq"] == "2"
    timers = await scenario.client.zrange(scenario.tag_keys.timers, 0, -1, withscores=True)
    assert timers == [(f"slot-a|h|{hold.hold_id}", float(hold.deadline_ms))]


async def test_reserve_is_idempotent_per_key(scenario: Scenario) -> None:
    """The same key and request returns the same hold; a different request is refused."""
    await open_slot(scenario)
    request = scenario.request("slot-a")
    first = await scenario.store.reserve(request)
    again = await scenario.store.reserve(request)
    assert again.replayed
    assert again.event_id is None
    assert again.hold == first.hold
    assert again.counts == SlotCounts(2, 1, 1, 0, 0)
    other_patient = scenario.request(
        "slot-a", account_id=request.account_id, key=request.idempotency_key
    )
    with pytest.raises(errors.IdempotencyKeyReusedError):
        await scenario.store.reserve(other_patient)
    assert len(await outbox(scenario)) == 2


async def test_reserve_refusals(scenario: Scenario) -> None:
    """Not released, suspended, past, unknown slot and sold out each have their code."""
    schedule_id = await open_slot(scenario, capacity=1, release_at=START + timedelta(hours=1))
    with pytest.raises(errors.NotReleasedError) as not_released:
        await scenario.store.reserve(scenario.request("slot-a"))
    assert not_released.value.context["release_ms"] == int(
        (START + timedelta(hours=1)).timestamp() * 1000
    )
    scenario.clock.advance(3600)
    await scenario.store.suspend(scenario.tag, schedule_id, "doctor_unavailable")
    with pytest.raises(errors.ScheduleSuspendedError):
        await scenario.store.reserve(scenario.request("slot-a"))
    await scenario.store.reopen(scenario.tag, schedule_id, "doctor_back")
    with pytest.raises(errors.SlotNotFoundError):
        await scenario.store.reserve(scenario.request("slot-zz"))
    await scenario.store.reserve(scenario.request("slot-a"))
    with pytest.raises(errors.SoldOutError):
        await scenario.store.reserve(scenario.request("slot-a"))
    scenario.clock.now_ms = int(scenario.schedule({}).starts_at.timestamp() * 1000)
    with pytest.raises(errors.SchedulePastError):
        await scenario.store.reserve(scenario.request("slot-a"))
    # Refusals append nothing: load, suspend, reopen, one hold.
    assert [e["type"] for e in await outbox(scenario)] == [
        "schedule_loaded",
        "schedule_suspended",
        "schedule_reopened",
        "hold_created",
    ]


async def test_reserve_one_per_day_rule(scenario: Scenario) -> None:
    """One open hold or booking per patient per department and day; an expired one
    no longer counts, even before any sweep."""
    await scenario.store.load_schedule(scenario.schedule({"slot-a": 5, "slot-b": 5}))
    first = await scenario.store.reserve(scenario.request("slot-a", patient_id="p-x"))
    with pytest.raises(errors.PatientRuleError) as refused:
        await scenario.store.reserve(scenario.request("slot-b", patient_id="p-x"))
    assert refused.value.context["rule"] == "one_per_day"
    scenario.clock.now_ms = first.hold.deadline_ms
    again = await scenario.store.reserve(scenario.request("slot-b", patient_id="p-x"))
    assert again.hold.state is HoldState.HELD


async def test_reserve_reclaims_due_holds_of_its_slot(scenario: Scenario) -> None:
    """A hold past its deadline frees its unit for the next reserve at once."""
    await open_slot(scenario, capacity=1)
    first = await scenario.store.reserve(scenario.request("slot-a"))
    scenario.clock.now_ms = first.hold.deadline_ms
    second = await scenario.store.reserve(scenario.request("slot-a"))
    assert second.counts == SlotCounts(1, 0, 1, 0, 0)
    expired = await scenario.store.get_hold(first.hold.hold_id)
    assert expired is not None
    assert expired.state is HoldState.EXPIRED
    assert expired.end_reason == "deadline"
    types = [e["type"] for e in await outbox(scenario)]
    assert types[-2:] == ["hold_expired", "hold_created"]


async def test_reserve_reclaiming_the_patients_own_hold_keeps_its_index(
    scenario: Scenario,
) -> None:
    """When the unit a patient asks for is the one their own lapsed hold still holds,
    the reclaim ends that hold and the patient's index lists only the new one (the
    step must not write back the index it read before the reclaim)."""
    await open_slot(scenario, capacity=1)
    first = await scenario.store.reserve(scenario.request("slot-a", patient_id="p-x"))
    scenario.clock.now_ms = first.hold.deadline_ms
    second = await scenario.store.reserve(scenario.request("slot-a", patient_id="p-x"))
    assert second.counts == SlotCounts(1, 0, 1, 0, 0)
    index = await scenario.client.hget(scenario.tag_keys.patients, "p-x")
    assert index == second.hold.hold_id


async def test_confirm_turns_hold_into_booking(scenario: Scenario) -> None:
    """Confirm before the deadline books; the same payment again replays; another
    payment reference is refused."""
    await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    account = held.hold.account_id
    booked = await scenario.store.confirm(
        held.hold.hold_id, account_id=account, payment_ref="pay-1"
    )
    assert booked.hold.state is HoldState.BOOKED
    assert booked.hold.payment_ref == "pay-1"
    assert booked.counts == SlotCounts(2, 1, 0, 1, 0)
    assert await scenario.client.zcard(scenario.tag_keys.timers) == 0
    replay = await scenario.store.confirm(held.hold.hold_id, account_id="", payment_ref="pay-1")
    assert replay.replayed
    with pytest.raises(errors.AlreadyConfirmedError):
        await scenario.store.confirm(held.hold.hold_id, account_id=account, payment_ref="pay-2")
    event = (await outbox(scenario))[-1]
    assert event["type"] == "booking_confirmed"
    assert event["payment_ref"] == "pay-1"


async def test_confirm_refusals(scenario: Scenario) -> None:
    """Unknown hold, another account, past deadline, released, suspended."""
    schedule_id = await open_slot(scenario, capacity=3)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    hold_id, account = held.hold.hold_id, held.hold.account_id
    with pytest.raises(errors.HoldNotFoundError):
        await scenario.store.confirm(
            hold_id_for("x", "y", scenario.tag), account_id=account, payment_ref="p"
        )
    with pytest.raises(errors.NotOwnerError):
        await scenario.store.confirm(hold_id, account_id="someone-else", payment_ref="p")
    released = await scenario.store.reserve(scenario.request("slot-a"))
    await scenario.store.release(
        released.hold.hold_id, account_id=released.hold.account_id, reason="patient_released"
    )
    with pytest.raises(errors.HoldNotActiveError) as not_active:
        await scenario.store.confirm(
            released.hold.hold_id, account_id=released.hold.account_id, payment_ref="p"
        )
    assert not_active.value.context["state"] == "released"
    await scenario.store.suspend(scenario.tag, schedule_id, "doctor_unavailable")
    with pytest.raises(errors.ScheduleSuspendedError):
        await scenario.store.confirm(hold_id, account_id=account, payment_ref="p")
    await scenario.store.reopen(scenario.tag, schedule_id, "doctor_back")
    scenario.clock.now_ms = held.hold.deadline_ms
    with pytest.raises(errors.HoldExpiredError):
        await scenario.store.confirm(hold_id, account_id=account, payment_ref="p")
    # The late confirm expired the hold in the same step; asking again says so too.
    with pytest.raises(errors.HoldExpiredError):
        await scenario.store.confirm(hold_id, account_id=account, payment_ref="p")
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(3, 3, 0, 0, 0)


async def test_release_hold_and_cancel_booking(scenario: Scenario) -> None:
    """Releasing a hold and cancelling a booking return the unit; repeating replays."""
    await open_slot(scenario)
    a = await scenario.store.reserve(scenario.request("slot-a"))
    b = await scenario.store.reserve(scenario.request("slot-a"))
    await scenario.store.confirm(b.hold.hold_id, account_id=b.hold.account_id, payment_ref="pay")
    released = await scenario.store.release(
        a.hold.hold_id, account_id=a.hold.account_id, reason="patient_released"
    )
    assert released.hold.state is HoldState.RELEASED
    assert released.hold.end_reason == "patient_released"
    cancelled = await scenario.store.release(
        b.hold.hold_id, account_id=b.hold.account_id, reason="patient_cancelled"
    )
    assert cancelled.hold.state is HoldState.CANCELLED
    assert cancelled.counts == SlotCounts(2, 2, 0, 0, 0)
    again = await scenario.store.release(
        b.hold.hold_id, account_id=b.hold.account_id, reason="patient_cancelled"
    )
    assert again.replayed
    types = [e["type"] for e in await outbox(scenario)]
    assert types[-2:] == ["hold_released", "booking_cancelled"]
    assert await scenario.client.hget(scenario.tag_keys.patients, a.hold.patient_id) is None


async def test_cancel_deadline(scenario: Scenario) -> None:
    """After the cancellation deadline a booking stays, unless forced (HIS, 停诊)."""
    await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    hold_id, account = held.hold.hold_id, held.hold.account_id
    await scenario.store.confirm(hold_id, account_id=account, payment_ref="pay")
    deadline = scenario.schedule({}).cancel_deadline
    scenario.clock.now_ms = int(deadline.timestamp() * 1000) + 1
    with pytest.raises(errors.CancelDeadlinePassedError) as refused:
        await scenario.store.release(hold_id, account_id=account, reason="patient_cancelled")
    assert refused.value.context["deadline_ms"] == int(deadline.timestamp() * 1000)
    forced = await scenario.store.release(hold_id, account_id="", reason="his_rejected", force=True)
    assert forced.hold.state is HoldState.CANCELLED


async def test_release_of_due_hold_expires_it(scenario: Scenario) -> None:
    """Releasing a hold already past its deadline records it as expired."""
    await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    scenario.clock.now_ms = held.hold.deadline_ms + 1
    with pytest.raises(errors.HoldExpiredError):
        await scenario.store.release(
            held.hold.hold_id, account_id=held.hold.account_id, reason="patient_released"
        )
    hold = await scenario.store.get_hold(held.hold.hold_id)
    assert hold is not None
    assert hold.state is HoldState.EXPIRED


async def test_extend_once_within_max_lifetime(scenario: Scenario) -> None:
    """Extend pushes the deadline once, capped by the maximum hold lifetime."""
    await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    hold_id, account = held.hold.hold_id, held.hold.account_id
    extended = await scenario.store.extend(hold_id, account_id=account)
    # default policy: ttl 15 min, extend 10 min, max lifetime 30 min
    assert extended.hold.deadline_ms == held.hold.created_ms + 25 * 60 * 1000
    assert extended.hold.extended
    with pytest.raises(errors.AlreadyExtendedError):
        await scenario.store.extend(hold_id, account_id=account)
    timers = await scenario.client.zrange(scenario.tag_keys.timers, 0, -1, withscores=True)
    assert timers == [(f"slot-a|h|{hold_id}", float(extended.hold.deadline_ms))]
    assert (await outbox(scenario))[-1]["type"] == "hold_extended"


async def test_extend_refusals(redis_client: Any, clock: Any) -> None:
    """No room under the maximum lifetime, a booking, another account, a due hold."""
    policy = HospitalPolicy(hold_ttl_s=600, max_hold_s=600, extend_s=300)
    store = await make_store(redis_client, clock, policy)
    scenario = Scenario(store=store, clock=clock, client=redis_client)
    await open_slot(scenario, capacity=3)
    held = await store.reserve(scenario.request("slot-a"))
    with pytest.raises(errors.ExtensionLimitError):
        await store.extend(held.hold.hold_id, account_id=held.hold.account_id)
    with pytest.raises(errors.NotOwnerError):
        await store.extend(held.hold.hold_id, account_id="other")
    paid = await store.reserve(scenario.request("slot-a"))
    await store.confirm(paid.hold.hold_id, account_id="", payment_ref="pay")
    with pytest.raises(errors.AlreadyConfirmedError):
        await store.extend(paid.hold.hold_id, account_id=paid.hold.account_id)
    clock.now_ms = held.hold.deadline_ms
    with pytest.raises(errors.HoldExpiredError):
        await store.extend(held.hold.hold_id, account_id=held.hold.account_id)


async def test_expire_sweeps_in_bounded_batches(scenario: Scenario) -> None:
    """The expirer frees due holds in batches and leaves holds that are not due."""
    await open_slot(scenario, capacity=10)
    scenario.store.expire_batch = 3
    due = [await scenario.store.reserve(scenario.request("slot-a")) for _ in range(7)]
    scenario.clock.advance(60)
    keep = await scenario.store.reserve(scenario.request("slot-a"))
    scenario.clock.now_ms = due[0].hold.deadline_ms
    changed, still_due = await scenario.store.expire_tag(scenario.tag, max_calls=2)
    assert (changed, still_due) == (6, 1)
    changed, still_due = await scenario.store.expire_tag(scenario.tag)
    assert (changed, still_due) == (1, 0)
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(10, 9, 1, 0, 0)
    kept = await scenario.store.get_hold(keep.hold.hold_id)
    assert kept is not None
    assert kept.state is HoldState.HELD
    result = await scenario.store.expire_all()
    assert result.tags >= 1


async def test_rerelease_delay_holds_units_back(redis_client: Any, clock: Any) -> None:
    """With an anti-scalping window, a freed unit waits (counted) before it returns."""
    policy = HospitalPolicy(rerelease_min_s=60, rerelease_max_s=120)
    store = await make_store(redis_client, clock, policy)
    scenario = Scenario(store=store, clock=clock, client=redis_client)
    await open_slot(scenario, capacity=1)
    held = await store.reserve(scenario.request("slot-a"))
    released = await store.release(
        held.hold.hold_id, account_id=held.hold.account_id, reason="patient_released"
    )
    assert released.counts == SlotCounts(1, 0, 0, 0, 1)
    with pytest.raises(errors.SoldOutError):
        await store.reserve(scenario.request("slot-a"))
    score = await redis_client.zscore(scenario.tag_keys.timers, f"slot-a|w|{held.hold.hold_id}")
    assert clock.now_ms + 60_000 <= score <= clock.now_ms + 120_000
    clock.now_ms = int(score)
    again = await store.reserve(scenario.request("slot-a"))
    assert again.counts == SlotCounts(1, 0, 1, 0, 0)
    assert [e["type"] for e in await outbox(scenario)][-2:] == ["unit_returned", "hold_created"]


async def test_adjust_capacity(scenario: Scenario) -> None:
    """加号 adds units; removing is allowed only down to what is free."""
    await open_slot(scenario, capacity=1)
    await scenario.store.reserve(scenario.request("slot-a"))
    counts = await scenario.store.adjust_capacity(scenario.tag, "slot-a", 2)
    assert counts == SlotCounts(3, 2, 1, 0, 0)
    with pytest.raises(errors.CapacityBelowTakenError):
        await scenario.store.adjust_capacity(scenario.tag, "slot-a", -3)
    with pytest.raises(errors.SlotNotFoundError):
        await scenario.store.adjust_capacity(scenario.tag, "slot-zz", 1)
    assert (await outbox(scenario))[-1]["type"] == "capacity_adjusted"


async def test_suspend_and_reopen_are_idempotent(scenario: Scenario) -> None:
    """Suspending twice changes nothing the second time; unknown schedules are refused."""
    schedule_id = await open_slot(scenario)
    assert await scenario.store.suspend(scenario.tag, schedule_id, "doctor_unavailable")
    assert not await scenario.store.suspend(scenario.tag, schedule_id, "doctor_unavailable")
    assert await scenario.store.reopen(scenario.tag, schedule_id, "doctor_back")
    assert not await scenario.store.reopen(scenario.tag, schedule_id, "doctor_back")
    with pytest.raises(errors.ScheduleNotFoundError):
        await scenario.store.suspend(scenario.tag, "no-such-schedule", "x")


async def test_load_schedule_behind_postgres_fences_instead_of_loading(
    scenario: Scenario,
) -> None:
    """A load told that Postgres recorded more of the tag's history than Redis holds (a
    store that lost it) fences the tag and writes nothing; in step, it loads."""
    spec = scenario.schedule({"slot-a": 2})
    await scenario.store.load_schedule(spec, postgres_seq=0)
    await scenario.store.reserve(scenario.request("slot-a"))
    seq = int(await scenario.client.hget(scenario.tag_keys.meta, "seq"))
    await scenario.store.load_schedule(spec, postgres_seq=seq)  # in step: a retry
    before = await outbox(scenario)
    with pytest.raises(errors.StoreFencedError):
        await scenario.store.load_schedule(spec, postgres_seq=seq + 5)
    assert await scenario.client.hget(scenario.tag_keys.meta, "fenced") == "1"
    assert await outbox(scenario) == before
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"] == SlotCounts(2, 1, 1, 0, 0)


async def test_fenced_tag_refuses_every_step(scenario: Scenario) -> None:
    """A tag marked fenced (state older than Postgres) refuses all state changes."""
    schedule_id = await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    await scenario.client.hset(scenario.tag_keys.meta, "fenced", "1")
    hold_id, account = held.hold.hold_id, held.hold.account_id
    steps = [
        scenario.store.reserve(scenario.request("slot-a")),
        scenario.store.confirm(hold_id, account_id=account, payment_ref="p"),
        scenario.store.release(hold_id, account_id=account, reason="x"),
        scenario.store.extend(hold_id, account_id=account),
        scenario.store.expire_tag(scenario.tag),
        scenario.store.adjust_capacity(scenario.tag, "slot-a", 1),
        scenario.store.suspend(scenario.tag, schedule_id, "x"),
        scenario.store.load_schedule(scenario.schedule({"slot-a": 9}, schedule_id=schedule_id)),
    ]
    for step in steps:
        with pytest.raises(errors.StoreFencedError):
            await step
    assert (await scenario.store.expire_all()).changed == 0


async def test_fence_reply_codes(scenario: Scenario) -> None:
    """fence answers OK with Redis's seq and whether the tag is fenced: 0 in step, 1
    behind Postgres (and the tag is fenced); invalid_argument without a tag name."""
    await open_slot(scenario)
    tag_keys = scenario.tag_keys.as_list()
    seq = int(await scenario.client.hget(scenario.tag_keys.meta, "seq"))
    try:
        in_step = await scenario.store.call_script("fence", tag_keys, [seq, scenario.tag])
        bad = await scenario.store.call_script("fence", tag_keys, [seq + 1, ""])
        behind = await scenario.store.call_script("fence", tag_keys, [seq + 1, scenario.tag])
        assert [int(part) for part in in_step] == [errors.LUA_OK, seq, 0]
        assert [int(part) for part in bad] == [errors.InvalidArgumentError.lua_code, 0, 0]
        assert [int(part) for part in behind] == [errors.LUA_OK, seq, 1]
        assert await scenario.store.fence_if_behind(scenario.tag, 0) == (True, seq)
    finally:
        # The server is shared by the session: leave no fenced tag for its samplers.
        await scenario.client.srem(keys.TAG_REGISTRY_KEY, scenario.tag)
        await scenario.client.delete(*tag_keys)


async def test_state_keys_never_expire(scenario: Scenario) -> None:
    """No key of a tag carries a TTL: state must never vanish under a booking."""
    await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"))
    await scenario.store.confirm(held.hold.hold_id, account_id="", payment_ref="p")
    await scenario.store.reserve(scenario.request("slot-a"))
    tag_keys = scenario.tag_keys.as_list()
    for key in tag_keys:
        if await scenario.client.exists(key):
            assert await scenario.client.ttl(key) == -1, key
    assert await scenario.client.exists(*tag_keys) == 8


async def test_events_carry_a_strictly_increasing_sequence(scenario: Scenario) -> None:
    """Every event of a tag has the next sequence number; the meta hash holds the last."""
    await open_slot(scenario, capacity=3)
    for _ in range(3):
        await scenario.store.reserve(scenario.request("slot-a"))
    seqs = [int(e["seq"]) for e in await outbox(scenario)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert int(await scenario.client.hget(scenario.tag_keys.meta, "seq")) == seqs[-1]


async def test_script_flush_is_survived(scenario: Scenario) -> None:
    """After SCRIPT FLUSH the store reloads its scripts by itself."""
    await open_slot(scenario)
    await scenario.client.script_flush()
    outcome = await scenario.store.reserve(scenario.request("slot-a"))
    assert outcome.hold.state is HoldState.HELD


async def test_request_id_rides_on_the_events(scenario: Scenario) -> None:
    """The API's request id passed to reserve, confirm and release is on their events."""
    await open_slot(scenario)
    held = await scenario.store.reserve(scenario.request("slot-a"), request_id="req-1")
    await scenario.store.confirm(
        held.hold.hold_id, account_id="", payment_ref="p", request_id="req-2"
    )
    await scenario.store.release(
        held.hold.hold_id, account_id="", reason="patient_cancelled", request_id="req-3"
    )
    await scenario.store.reserve(scenario.request("slot-a"))
    events = await outbox(scenario)
    assert [e.get("rid") for e in events[-4:]] == ["req-1", "req-2", "req-3", None]
