"""The HIS client against the simulator process: idempotent creates through lost and
duplicated answers, every fault, the breaker and the limits, and the HIS's refusals."""

from __future__ import annotations

import asyncio
import time

import pytest

from inventory.his.client import FhirHisClient
from inventory.his.errors import (
    HisCircuitOpenError,
    HisProtocolError,
    HisRefusedError,
    HisUnavailableError,
)
from inventory.his.resilience import BreakerState
from inventory.his.types import HisPatient, HisRefusal
from inventory.simulators.his.process import SimProcess
from tests.his.conftest import SimAdmin, booking_id, client_config, tomorrow

# --------------------------------------------------------------------------------------
# idempotent create
# --------------------------------------------------------------------------------------


async def test_create_twice_gives_one_appointment(admin: SimAdmin, his: FhirHisClient) -> None:
    """The same booking id twice: one appointment, returned both times (201 then 200)."""
    slot = await admin.fresh_slot(his)
    ours = booking_id()
    patient = HisPatient("王五", "11010119900307803X")
    first = await his.create_appointment(ours, slot.slot_id, patient)
    second = await his.create_appointment(ours, slot.slot_id)
    assert second == first
    assert (first.booking_id, first.status, first.channel) == (ours, "booked", "platform")
    assert first.number
    assert first.location_name
    assert first.visit_start is not None
    assert slot.starts_at <= first.visit_start < slot.ends_at
    found = await his.search_appointments(schedule_id=slot.schedule_id)
    assert [a.appointment_id for a in found if a.booking_id == ours] == [first.appointment_id]
    assert (await admin.state())["requests"]["by_method"]["POST"] == 2


async def test_lost_answer_then_retry_gives_one_appointment(
    admin: SimAdmin, his: FhirHisClient
) -> None:
    """The sim commits, then drops the answer; the client's retry gets the same
    appointment and the HIS holds one, not two."""
    slot = await admin.fresh_slot(his)
    before = (await admin.state())["state"]["appointments"]
    await admin.faults(drop_next=1, methods=["POST"])
    ours = booking_id()
    made = await his.create_appointment(ours, slot.slot_id)
    state = await admin.state()
    assert state["requests"]["injected"] == {"drop": 1}
    assert state["requests"]["by_method"]["POST"] == 2
    assert state["state"]["appointments"] == before + 1
    assert await his.find_appointment(ours) == made
    assert his.stats.retries == 1


async def test_duplicated_delivery_commits_once(admin: SimAdmin, his: FhirHisClient) -> None:
    """A create delivered twice (a replaying proxy) makes one appointment, and the
    client gets it."""
    slot = await admin.fresh_slot(his)
    before = (await admin.state())["state"]["appointments"]
    await admin.faults(duplicate_next=1, methods=["POST"])
    ours = booking_id()
    made = await his.create_appointment(ours, slot.slot_id)
    state = await admin.state()
    assert state["requests"]["injected"] == {"duplicate": 1}
    assert state["state"]["appointments"] == before + 1
    assert made.booking_id == ours
    assert await his.find_appointment(ours) == made


# --------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------


async def test_latency_within_the_timeout_is_fine(sim: SimProcess, admin: SimAdmin) -> None:
    """Added latency below the request timeout: answers come, slower, without retries."""
    await admin.faults(latency_ms=250, jitter_ms=50)
    async with FhirHisClient(client_config(sim, request_timeout_s=1.0)) as his:
        started = time.monotonic()
        schedule = await his.list_schedules(tomorrow(), tomorrow())
        elapsed = time.monotonic() - started
        assert schedule
        assert elapsed >= 0.25
        assert his.stats.retries == 0


async def test_timeouts_are_retried_then_unavailable(sim: SimProcess, admin: SimAdmin) -> None:
    """A HIS that hangs past the request timeout: each attempt times out, the client
    retries up to its attempts and then raises HisUnavailableError."""
    await admin.faults(timeout_rate=1.0, hang_s=1.5)
    config = client_config(sim, request_timeout_s=0.3, attempts=3, breaker_failures=10)
    async with FhirHisClient(config) as his:
        started = time.monotonic()
        with pytest.raises(HisUnavailableError) as raised:
            await his.get_appointment("appt-1")
        assert time.monotonic() - started < 1.5
        assert not isinstance(raised.value, HisCircuitOpenError)
        assert his.stats.attempts == 3
    requests = (await admin.state())["requests"]
    assert requests["injected"] == {"timeout": 3}


async def test_errors_are_retried_until_success(sim: SimProcess, admin: SimAdmin) -> None:
    """503s and 500s from the HIS are retried with back-off; the call then succeeds."""
    await admin.faults(error_next=2)
    async with FhirHisClient(client_config(sim, attempts=3)) as his:
        assert await his.get_schedule("no-such-schedule") is None
        assert his.stats.retries == 2
    await admin.faults(error_rate=0.3, error_status=500)
    async with FhirHisClient(client_config(sim, attempts=8, breaker_failures=8)) as his:
        for _ in range(15):
            assert await his.get_appointment("no-such-appointment") is None
        assert his.breaker.state is BreakerState.CLOSED
        assert his.stats.retries >= 1
    assert (await admin.state())["requests"]["injected"]["error"] >= 3


async def test_the_circuit_opens_then_half_opens(sim: SimProcess, admin: SimAdmin) -> None:
    """N consecutive failures open the circuit (calls fail without reaching the HIS);
    after the cool-down one probe goes through: a failure opens it again, a success
    closes it."""
    changes: list[tuple[BreakerState, BreakerState]] = []
    config = client_config(sim, attempts=1, breaker_failures=3, breaker_cooldown_s=0.4)
    async with FhirHisClient(config, on_breaker_change=lambda a, b: changes.append((a, b))) as his:
        await admin.faults(error_rate=1.0)
        for _ in range(3):
            with pytest.raises(HisUnavailableError):
                await his.get_appointment("x")
        assert his.breaker.state is BreakerState.OPEN
        with pytest.raises(HisCircuitOpenError):
            await his.get_appointment("x")
        assert (await admin.state())["requests"]["total"] == 3
        await asyncio.sleep(0.45)
        assert his.breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(HisUnavailableError):
            await his.get_appointment("x")  # the probe fails
        assert his.breaker.state is BreakerState.OPEN
        await admin.faults(error_rate=0.0)
        await asyncio.sleep(0.45)
        assert await his.get_appointment("x") is None  # the probe succeeds
        assert his.breaker.state is BreakerState.CLOSED
        assert his.breaker.opened_total == 2
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


async def test_the_rate_limit_holds(sim: SimProcess, admin: SimAdmin) -> None:
    """40 calls at once through a 20/s bucket of burst 5: the HIS never sees more than
    burst + rate x window requests in any window."""
    rate, burst = 20.0, 5
    config = client_config(sim, rate_per_s=rate, burst=burst, max_concurrency=50)
    async with FhirHisClient(config) as his:
        started = time.monotonic()
        await asyncio.gather(*(his.get_appointment(f"none-{i}") for i in range(40)))
        assert time.monotonic() - started >= (40 - burst) / rate * 0.95
    arrivals = sorted((await admin.state(arrivals=True))["requests"]["arrivals"])
    assert len(arrivals) == 40
    for i, first in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            window = arrivals[j] - first
            # +1 and 20 ms: a request's flight time varies a little between the two ends.
            assert j - i + 1 <= burst + rate * (window + 0.02) + 1


async def test_the_concurrency_limit_holds(sim: SimProcess, admin: SimAdmin) -> None:
    """With 200 ms of latency and a limit of 3, the HIS sees exactly 3 calls at once."""
    await admin.faults(latency_ms=200)
    async with FhirHisClient(client_config(sim, max_concurrency=3)) as his:
        await asyncio.gather(*(his.get_appointment(f"none-{i}") for i in range(12)))
    requests = (await admin.state())["requests"]
    assert requests["total"] == 12
    assert requests["max_in_flight"] == 3


async def test_answers_over_the_size_cap_are_refused(sim: SimProcess, admin: SimAdmin) -> None:
    """An answer larger than max_response_bytes is a protocol error, not retried."""
    async with FhirHisClient(client_config(sim, max_response_bytes=2_000)) as his:
        with pytest.raises(HisProtocolError):
            await his.list_schedules(tomorrow(), tomorrow())
        assert his.stats.attempts == 1


# --------------------------------------------------------------------------------------
# the HIS's own decisions
# --------------------------------------------------------------------------------------


async def test_a_suspended_schedule_refuses(admin: SimAdmin, his: FhirHisClient) -> None:
    """停诊: the schedule reads inactive with its reason, and a create is refused
    (suspended) once, without retries."""
    slot = await admin.fresh_slot(his)
    await admin.suspend(slot.schedule_id, "专家临时停诊")
    schedule = await his.get_schedule(slot.schedule_id)
    assert schedule is not None
    assert (schedule.status, schedule.status_reason) == ("suspended", "专家临时停诊")
    assert {s.status for s in schedule.slots} == {"busy-unavailable"}
    with pytest.raises(HisRefusedError) as refused:
        await his.create_appointment(booking_id(), slot.slot_id)
    assert refused.value.reason is HisRefusal.SUSPENDED
    assert refused.value.his_status == 409
    assert (await admin.state())["requests"]["by_method"]["POST"] == 1
    assert his.breaker.state is BreakerState.CLOSED


async def test_full_refuses_and_added_capacity_accepts(admin: SimAdmin, his: FhirHisClient) -> None:
    """A full slot refuses (full); after 加号 the same booking is accepted."""
    slot = await admin.fresh_slot(his)
    for _ in range(slot.free):
        await his.create_appointment(booking_id(), slot.slot_id)
    late = booking_id()
    with pytest.raises(HisRefusedError) as refused:
        await his.create_appointment(late, slot.slot_id)
    assert refused.value.reason is HisRefusal.FULL
    assert await his.find_appointment(late) is None
    await admin.add_capacity(slot.slot_id, 1)
    made = await his.create_appointment(late, slot.slot_id)
    assert made.status == "booked"
    schedule = await his.get_schedule(slot.schedule_id)
    assert schedule is not None
    after = next(s for s in schedule.slots if s.slot_id == slot.slot_id)
    assert (after.capacity, after.booked) == (slot.capacity + 1, slot.capacity + 1)
    assert after.status == "busy"


async def test_other_channel_bookings_are_visible(admin: SimAdmin, his: FhirHisClient) -> None:
    """Window and phone bookings appear in searches by schedule and by date, with their
    own identifiers, and count against the slot."""
    slot = await admin.fresh_slot(his, min_free=3)
    window = await admin.book_other(slot.slot_id, "window", 2)
    phone = await admin.book_other(slot.slot_id, "phone")
    by_schedule = await his.search_appointments(schedule_id=slot.schedule_id)
    by_date = await his.search_appointments(visit_date=slot.starts_at.date())
    others = {a.appointment_id: a for a in by_schedule if a.channel != "platform"}
    assert set(others) == {m["id"] for m in window + phone}
    assert {a.channel for a in others.values()} == {"window", "phone"}
    assert all(a.booking_id is None and a.external_id and a.number for a in others.values())
    assert set(others) <= {a.appointment_id for a in by_date}
    schedule = await his.get_schedule(slot.schedule_id)
    assert schedule is not None
    assert next(s for s in schedule.slots if s.slot_id == slot.slot_id).booked == slot.booked + 3


async def test_cancel_is_idempotent_and_frees_the_unit(admin: SimAdmin, his: FhirHisClient) -> None:
    """Cancelling twice returns the cancelled appointment both times; the unit comes
    back once."""
    slot = await admin.fresh_slot(his)
    made = await his.create_appointment(booking_id(), slot.slot_id)
    first = await his.cancel_appointment(made.appointment_id, "患者取消")
    second = await his.cancel_appointment(made.appointment_id, "患者取消")
    assert first.status == second.status == "cancelled"
    assert first.cancel_reason == "患者取消"
    schedule = await his.get_schedule(slot.schedule_id)
    assert schedule is not None
    assert next(s for s in schedule.slots if s.slot_id == slot.slot_id).booked == slot.booked
    with pytest.raises(HisRefusedError) as refused:
        await his.cancel_appointment("appt-does-not-exist", "x")
    assert refused.value.reason is HisRefusal.NOT_FOUND


async def test_an_unknown_slot_is_refused(admin: SimAdmin, his: FhirHisClient) -> None:
    """A create naming a slot the HIS does not know is refused (not-found), not retried."""
    with pytest.raises(HisRefusedError) as refused:
        await his.create_appointment(booking_id(), "no-such-slot")
    assert refused.value.reason is HisRefusal.NOT_FOUND
    assert his.stats.attempts == 1
