"""停诊 through our own operator route does what the HIS's 停诊 does: holds released,
bookings cancelled past the deadline with their refunds requested and an event for the
notifier, the HIS told; the worker that does it may die half-way (kill -9) and every
booking still ends cancelled and refunded exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory import errors
from inventory.api.auth import mint_token
from inventory.devtools.servers import free_port
from inventory.his.suspension import sweep_suspensions
from tests.api.conftest import api_env
from tests.his.conftest import SimAdmin
from tests.his.world import PAYMENTS, World, start_worker

pytestmark = pytest.mark.skipif(not PAYMENTS, reason="needs the payments package")


@pytest.fixture
async def clean(world: World, admin: SimAdmin) -> World:
    """The world, with no faults in the simulator before and after the test."""
    return world


async def suspend(api: dict[str, Any], schedule_id: str, reason: str) -> tuple[int, Any]:
    """POST the operator's suspend route: (status, body)."""
    token = mint_token(api["settings"], "ops", operator=True, ttl_s=600)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{api['url']}/v1/operator/schedules/{schedule_id}/suspend",
            json={"reason": reason},
            headers={"Authorization": f"Bearer {token}"},
        ) as answer,
    ):
        return answer.status, await answer.json(content_type=None)


async def events_of(world: World, booking_id: str) -> list[Any]:
    """The lifecycle events recorded for a booking."""
    return await world.fetch(
        "SELECT type, payload FROM lifecycle_events WHERE booking_id = $1 ORDER BY id",
        booking_id,
    )


async def test_operator_suspension_cancels_refunds_and_tells_the_his(
    clean: World, api: dict[str, Any]
) -> None:
    """Suspend through the operator route, then one sweep: the hold is released, both
    bookings (one already in the HIS) cancelled past the deadline with the operator's
    reason, refunds requested, one notifier event each, and the HIS appointment
    cancelled by the submitter; a second sweep finds nothing."""
    world = clean
    schedule = await world.fresh_schedule()
    first, second = schedule.slots[0].slot_id, schedule.slots[1].slot_id
    sent = await world.book(first, pay=True)
    assert await world.submitter.drain() >= 1
    assert (await world.booking(sent))["status"] == "his_confirmed"
    waiting = await world.book(second, pay=True)
    held = await world.hold(second)

    status, body = await suspend(api, schedule.schedule_id, "doctor_unavailable")
    assert (status, body) == (200, {"schedule_id": schedule.schedule_id, "status": "suspended"})
    with pytest.raises(errors.ScheduleSuspendedError):
        await world.hold(first)

    swept = await sweep_suspensions(world.pool, world.store)
    [result] = [r for r in swept if r.schedule_id == schedule.schedule_id]
    assert sorted(result.bookings_cancelled) == sorted([sent, waiting])
    assert result.holds_released == [held]
    assert len(result.refunds_requested) == 2
    for booking in (sent, waiting):
        row = await world.booking(booking)
        assert (row["status"], row["cancel_reason"]) == (
            "cancelled",
            "suspended: doctor_unavailable",
        )
        hold = await world.store.get_hold(booking)
        assert hold is not None
        assert hold.state.value == "cancelled"
        assert [(r["reason"], r["status"]) for r in await world.refunds(booking)] == [
            ("suspended", "pending")
        ]
        [event] = await events_of(world, booking)
        assert event["type"] == "booking_cancelled_by_suspension"
        assert event["payload"]["code"] == "suspended"
        assert event["payload"]["refund_id"] in result.refunds_requested
    for slot_id in (first, second):
        counts = await world.counts(slot_id)
        assert counts is not None
        assert counts.held == counts.booked == 0

    await world.submitter.drain()
    appointment = await world.his.find_appointment(sent)
    assert appointment is not None
    assert appointment.status == "cancelled"
    assert (await world.booking(sent))["his_cancelled_at"] is not None
    # The persister has not run here: Postgres still lists the hold as held, so the
    # sweep looks again, and changes nothing.
    again = await sweep_suspensions(world.pool, world.store)
    assert all(not (r.bookings_cancelled or r.holds_released) for r in again)


async def test_his_sync_keeps_an_operator_suspension(clean: World, api: dict[str, Any]) -> None:
    """The HIS still lists a schedule an operator suspended as active: the sync and the
    reconciler leave it suspended (no reopen), and the operator's reopen opens it."""
    world = clean
    schedule = await world.fresh_schedule()
    assert (await suspend(api, schedule.schedule_id, "doctor_unavailable"))[0] == 200
    report = await world.sync.sync()
    assert schedule.schedule_id not in report.reopened
    reconciled = await world.reconciler.reconcile(fix=True)
    assert not [i for i in reconciled.items if i.subject == schedule.schedule_id]
    with pytest.raises(errors.ScheduleSuspendedError):
        await world.hold(schedule.slots[0].slot_id)
    token = mint_token(api["settings"], "ops", operator=True, ttl_s=600)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{api['url']}/v1/operator/schedules/{schedule.schedule_id}/reopen",
            json={"reason": "doctor_back"},
            headers={"Authorization": f"Bearer {token}"},
        ) as answer,
    ):
        assert answer.status == 200
    assert await world.hold(schedule.slots[0].slot_id)


async def big_schedule(world: World, capacity: int) -> tuple[str, str]:
    """A schedule of our own (not in the HIS) on a demo department, one slot of
    ``capacity``, released, its cancellation deadline passed (a same-day 停诊: no
    patient could cancel any more): (schedule id, slot id)."""
    template = await world.fresh_schedule()
    [row] = await world.fetch("SELECT * FROM schedules WHERE id = $1", template.schedule_id)
    schedule_id, slot_id = f"crash-{uuid.uuid4().hex[:8]}", f"crash-sl-{uuid.uuid4().hex[:8]}"
    values = {
        "schedule_id": schedule_id,
        **{
            k: row[k]
            for k in (
                "hospital_id",
                "department_id",
                "doctor_id",
                "visit_date",
                "session",
                "starts_at",
                "ends_at",
                "release_at",
                "cancel_deadline",
                "fee_fen",
                "location",
            )
        },
    }
    values["session"] = "evening"
    starts = row["ends_at"] + timedelta(hours=1)
    values |= {"starts_at": starts, "ends_at": starts + timedelta(hours=3)}
    values["cancel_deadline"] = datetime.now(tz=UTC) - timedelta(hours=1)
    slot = {
        "slot_id": slot_id,
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=3),
        "capacity": capacity,
    }
    await world.catalogue.put_schedule(values, [slot])
    return schedule_id, slot_id


@pytest.mark.slow
async def test_worker_killed_mid_suspension_ends_every_booking_once(
    clean: World, api: dict[str, Any], tmp_path: Path
) -> None:
    """The worker is SIGKILLed while it cancels a suspended schedule's bookings, then
    started again: every booking ends cancelled with one refund request, one history
    row and one notifier event, and every unit is back in Redis."""
    world = clean
    count = 150
    schedule_id, slot_id = await big_schedule(world, count)
    bookings = await world.book_many([slot_id] * count)
    for booking in bookings:
        await world.pay(booking, 1000)
    env = api_env(world.redis.url, world.database_url, free_port())
    env["INVENTORY_WORKER_METRICS_PORT"] = "0"
    env.pop("INVENTORY_HIS_URL", None)

    async def cancelled() -> int:
        [row] = await world.fetch(
            "SELECT count(*) AS n FROM bookings WHERE schedule_id = $1 AND status = 'cancelled'",
            schedule_id,
        )
        return int(row["n"])

    assert (await suspend(api, schedule_id, "doctor_unavailable"))[0] == 200
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while (done := await cancelled()) == 0:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            await asyncio.sleep(0.01)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        assert done < count, "the worker finished before it could be killed"
        worker = start_worker(env, tmp_path / "worker.log")
        deadline = time.monotonic() + 90
        while True:
            counts = await world.counts(slot_id)
            assert counts is not None
            if await cancelled() == count and counts.booked == 0:
                break
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
    refunds = await world.fetch(
        "SELECT hold_id, count(*) AS n, min(reason) AS reason FROM refunds"
        " WHERE hold_id = ANY($1::text[]) GROUP BY hold_id",
        bookings,
    )
    assert {(r["hold_id"], r["n"], r["reason"]) for r in refunds} == {
        (b, 1, "suspended") for b in bookings
    }
    events = await world.fetch(
        "SELECT booking_id, count(*) AS n FROM lifecycle_events"
        " WHERE booking_id = ANY($1::text[]) GROUP BY booking_id",
        bookings,
    )
    assert {(e["booking_id"], e["n"]) for e in events} == {(b, 1) for b in bookings}
    history = await world.fetch(
        "SELECT hold_id, count(*) AS n FROM booking_status_history"
        " WHERE hold_id = ANY($1::text[]) AND to_status = 'cancelled'"
        " AND event_key LIKE 'his:%' GROUP BY hold_id",
        bookings,
    )
    assert {(h["hold_id"], h["n"]) for h in history} == {(b, 1) for b in bookings}
    counts = await world.counts(slot_id)
    assert counts is not None
    assert (counts.held, counts.booked, counts.remaining + counts.waiting) == (0, 0, count)
