"""The HIS flows against the simulator process, with real Redis and Postgres: schedule
sync, booking submission with every fault, suspension, capacity changes, refusals, and
the patient's whole path through the API to the HIS's appointment number."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

from inventory import errors
from inventory.his.flows import his_loops
from inventory.his.submitter import keyring_patients
from inventory.ops.config import Settings
from tests.api.helpers import register_patient
from tests.his.conftest import SimAdmin
from tests.his.world import PAYMENTS, World, tomorrow


@pytest.fixture
async def clean(world: World, admin: SimAdmin) -> World:
    """The world, with no faults in the simulator before and after the test."""
    return world


# --------------------------------------------------------------------------------------
# the patient's whole path
# --------------------------------------------------------------------------------------


async def test_patient_path_from_synced_catalogue_to_his_appointment_number(
    clean: World, api: dict[str, Any]
) -> None:
    """Catalogue synced from the HIS -> API: patient, hold, confirm -> submitter -> the
    booking shows the HIS's appointment number, visit time and place."""
    world = clean
    base, settings = api["url"], api["settings"]
    slot = await world.fresh_slot()
    location = await world.location(slot.slot_id)

    class Server:  # what tests/api/helpers.register_patient needs
        url = base

        @staticmethod
        def headers(account: str) -> dict[str, str]:
            from inventory.api.auth import mint_token

            return {"Authorization": f"Bearer {mint_token(settings, account, ttl_s=600)}"}

    account = f"acct-{uuid.uuid4().hex[:8]}"
    headers = Server.headers(account)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/hospitals") as answer:
            hospitals = {h["hospital_id"] for h in (await answer.json())["items"]}
        assert location.hospital_id in hospitals
        url = f"{base}/v1/departments/{location.department_id}/doctors"
        async with http.get(url) as answer:
            doctors = (await answer.json())["items"]
        assert any(d["title"] for d in doctors)
        url = (
            f"{base}/v1/departments/{location.department_id}/schedules"
            f"?date={location.visit_date.isoformat()}"
        )
        async with http.get(url) as answer:
            day = (await answer.json())["items"]
        assert location.schedule_id in {s["schedule_id"] for s in day}
        async with http.get(f"{base}/v1/schedules/{location.schedule_id}/slots") as answer:
            slots = {s["slot_id"]: s for s in (await answer.json())["items"]}
        assert slots[slot.slot_id]["remaining"] == slot.free
        patient_id = await register_patient(Server, http, account)  # type: ignore[arg-type]
        body = {"slot_id": slot.slot_id, "patient_id": patient_id, "channel": "wechat"}
        key = {"Idempotency-Key": uuid.uuid4().hex}
        async with http.post(f"{base}/v1/holds", json=body, headers=headers | key) as answer:
            hold = await answer.json()
            assert answer.status == 201, hold
        url = f"{base}/v1/holds/{hold['hold_id']}/confirm"
        async with http.post(url, json={"payment_ref": "wx-e2e"}, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
        submitter = world.submitter_with(patients=keyring_patients(world.pool, settings.keyring()))
        assert await submitter.drain() >= 1
        url = f"{base}/v1/bookings/{hold['hold_id']}"
        async with http.get(url, headers=headers) as answer:
            booking = await answer.json()
    appointment = await world.his.find_appointment(hold["hold_id"])
    assert appointment is not None
    assert booking["status"] == "his_confirmed"
    assert booking["his_appointment_no"] == appointment.number
    assert booking["place"] == appointment.location_name
    assert appointment.visit_start is not None
    assert datetime.fromisoformat(booking["visit_time"]) == appointment.visit_start
    assert slot.starts_at <= appointment.visit_start < slot.ends_at


# --------------------------------------------------------------------------------------
# schedule sync
# --------------------------------------------------------------------------------------


async def test_sync_brings_the_window_into_postgres_and_redis(clean: World) -> None:
    """Every HIS schedule of the window is here with its slots, capacities equal in
    Postgres and Redis; a second round changes nothing."""
    world = clean
    first, last = world.sync.window()
    his = await world.his.list_schedules(first, last)
    rows = await world.fetch(
        "SELECT s.id, s.status, sl.id AS slot, sl.capacity FROM schedules s"
        " JOIN slots sl ON sl.schedule_id = s.id WHERE s.visit_date BETWEEN $1 AND $2",
        first,
        last,
    )
    assert {r["id"] for r in rows} >= {s.schedule_id for s in his}
    capacity = {r["slot"]: r["capacity"] for r in rows}
    for schedule in his[:40]:
        for slot in schedule.slots:
            counts = await world.counts(slot.slot_id)
            assert counts is not None
            assert counts.capacity == capacity[slot.slot_id]
    doctors = await world.fetch("SELECT count(*) AS n FROM doctors")
    assert doctors[0]["n"] == 24
    again = await world.sync.sync()
    assert (again.created, again.updated, again.suspended, again.skipped) == ([], [], [], [])


async def test_new_schedule_in_the_his_appears_after_sync(clean: World) -> None:
    """A schedule the hospital adds (an evening clinic) is bookable here after a sync."""
    world = clean
    day = tomorrow() + timedelta(days=2)
    made = await world.admin.call(
        "POST",
        "schedules",
        {"doctor": "dermatology-dr2", "date": day.isoformat(), "session": "evening"},
    )
    report = await world.sync.sync()
    assert made["schedule"] in report.created
    for slot_id in made["slots"]:
        counts = await world.counts(slot_id)
        assert counts is not None
        assert counts.capacity == 4


async def test_added_capacity_applies(clean: World) -> None:
    """加号 in the HIS: our capacity and free units grow by as much after a sync."""
    world = clean
    slot = await world.fresh_slot()
    before = await world.counts(slot.slot_id)
    assert before is not None
    await world.admin.add_capacity(slot.slot_id, 3)
    report = await world.sync.sync()
    after = await world.counts(slot.slot_id)
    assert slot.slot_id in report.capacity_changed
    assert after is not None
    assert (after.capacity, after.remaining) == (before.capacity + 3, before.remaining + 3)


async def test_capacity_below_taken_is_reported_not_refused(clean: World) -> None:
    """The HIS lowers a slot below what we sold: the sync reports it, keeps the sold
    units, applies the rest of the schedule, and does not fail."""
    world = clean
    slot = await world.fresh_slot(min_free=2)
    await world.book(slot.slot_id)
    await world.book(slot.slot_id)
    await world.admin.call("POST", f"slots/{slot.slot_id}/capacity", {"set": 1})
    report = await world.sync.sync()
    refused = [r for r in report.capacity_refused if r["slot_id"] == slot.slot_id]
    assert refused == [{"slot_id": slot.slot_id, "wanted": 1, "taken": 2}]
    counts = await world.counts(slot.slot_id)
    assert counts is not None
    assert (counts.capacity, counts.booked, counts.remaining) == (2, 2, 0)


async def test_suspension_cancels_holds_and_bookings_with_reason_and_refund(
    clean: World,
) -> None:
    """停诊 in the HIS: after a sync the schedule refuses reserves, its hold is released,
    its bookings (one already in the HIS) are cancelled with the reason the patient sees
    and their refunds requested, and the HIS appointment is cancelled too."""
    world = clean
    schedule = await world.fresh_schedule()
    first, second = schedule.slots[0].slot_id, schedule.slots[1].slot_id
    sent = await world.book(first, pay=True)
    assert await world.submitter.drain() >= 1
    assert (await world.booking(sent))["status"] == "his_confirmed"
    waiting = await world.book(second, pay=True)
    held = await world.hold(second)
    await world.admin.suspend(schedule.schedule_id, "专家临时停诊")
    report = await world.sync.sync()
    [suspension] = [s for s in report.suspended if s.schedule_id == schedule.schedule_id]
    assert sorted(suspension.bookings_cancelled) == sorted([sent, waiting])
    assert suspension.holds_released == [held]
    for booking in (sent, waiting):
        row = await world.booking(booking)
        assert row["status"] == "cancelled"
        assert row["cancel_reason"] == "suspended: 专家临时停诊"
        redis_hold = await world.store.get_hold(booking)
        assert redis_hold is not None
        assert redis_hold.state.value == "cancelled"
        if PAYMENTS:
            assert [(r["reason"], r["status"]) for r in await world.refunds(booking)] == [
                ("suspended", "pending")
            ]
        view = await world.bookings.get_for_account(booking, "acct")
        assert view is not None
        assert (view["status"], view["cancel_reason"]) == ("cancelled", "suspended: 专家临时停诊")
    for slot_id in (first, second):
        counts = await world.counts(slot_id)
        assert counts is not None
        assert counts.held == counts.booked == 0
    with pytest.raises(errors.ScheduleSuspendedError):
        await world.hold(first)
    await world.submitter.drain()
    appointment = await world.his.find_appointment(sent)
    assert appointment is not None
    assert appointment.status == "cancelled"
    assert (await world.booking(sent))["his_cancelled_at"] is not None
    assert (await world.sync.sync()).suspended == []


async def test_resumed_schedule_reopens(clean: World) -> None:
    """A schedule the HIS resumes after a suspension is open for reserves again."""
    world = clean
    schedule = await world.fresh_schedule()
    await world.admin.suspend(schedule.schedule_id)
    await world.sync.sync()
    await world.admin.call("POST", f"schedules/{schedule.schedule_id}/resume")
    report = await world.sync.sync()
    assert schedule.schedule_id in report.reopened
    assert await world.hold(schedule.slots[0].slot_id)


# --------------------------------------------------------------------------------------
# booking submission and its faults
# --------------------------------------------------------------------------------------


async def test_latency_and_errors_still_submit_every_booking(clean: World, admin: SimAdmin) -> None:
    """With latency and half the HIS's answers 503 (and one call failing all its
    attempts, so a booking is deferred), every booking ends his_confirmed with exactly one
    appointment each."""
    world = clean
    slot = await world.fresh_slot(min_free=3)
    made = [await world.book(slot.slot_id) for _ in range(3)]
    deferred = world.submitter.stats.deferred
    attempts = world.his.config.attempts
    await admin.faults(latency_ms=30, error_rate=0.5, error_next=attempts, methods=["POST"])
    for _ in range(100):
        await world.submitter.drain()
        statuses = [(await world.booking(b))["status"] for b in made]
        if statuses == ["his_confirmed"] * len(made):
            break
        await asyncio.sleep(0.05)
    await admin.clear()
    assert world.submitter.stats.deferred > deferred
    appointments = await world.his.search_appointments(schedule_id=slot.schedule_id)
    for booking in made:
        assert (await world.booking(booking))["status"] == "his_confirmed"
        assert [a.booking_id for a in appointments].count(booking) == 1


async def test_his_down_keeps_the_booking_confirmed_then_submits_it(
    clean: World, admin: SimAdmin
) -> None:
    """HIS down: the booking stays confirmed (attempt counted, error kept) and is sent
    once the HIS is back."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id)
    world.sim.stop()
    try:
        await world.submitter.drain()
        row = await world.booking(booking)
        assert row["status"] == "confirmed"
        assert row["his_attempts"] >= 1 or row["his_last_error"] == "circuit_open"
        assert row["his_last_error"]
    finally:
        world.sim.start()
    for _ in range(100):
        await world.submitter.drain()
        if (await world.booking(booking))["status"] == "his_confirmed":
            break
        await asyncio.sleep(0.05)
    row = await world.booking(booking)
    assert row["status"] == "his_confirmed"
    assert row["his_appointment_no"]


async def test_lost_responses_then_retry_create_one_appointment(
    clean: World, admin: SimAdmin
) -> None:
    """Every answer of the first submission is lost after the HIS committed: the booking
    is retried later and the HIS holds one appointment for it, not two."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id)
    before = (await admin.state())["state"]["appointments"]
    attempts = world.his.config.attempts
    await admin.faults(drop_next=attempts, methods=["POST"], resources=["Appointment"])
    await world.submitter.submit_batch()
    row = await world.booking(booking)
    assert row["status"] == "confirmed"
    assert (await admin.state())["requests"]["injected"] == {"drop": attempts}
    await asyncio.sleep(0.3)
    await world.submitter.drain()
    row = await world.booking(booking)
    assert row["status"] == "his_confirmed"
    assert (await admin.state())["state"]["appointments"] == before + 1
    found = await world.his.search_appointments(schedule_id=slot.schedule_id)
    assert [a.booking_id for a in found].count(booking) == 1


async def test_appointment_cancelled_by_the_hospital_before_we_heard_ends_the_booking(
    clean: World, admin: SimAdmin
) -> None:
    """The HIS made the appointment (answer lost), then the hospital cancelled it: the
    retry learns it and the booking ends cancelled with the hospital's reason, refunded
    and released, instead of his_confirmed."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id, pay=True)
    attempts = world.his.config.attempts
    await admin.faults(drop_next=attempts, methods=["POST"], resources=["Appointment"])
    await world.submitter.submit_batch()
    made = await world.his.find_appointment(booking)
    assert made is not None
    await admin.call("POST", f"appointments/{made.appointment_id}/cancel", {"reason": "医生停诊"})
    await asyncio.sleep(0.3)
    await world.submitter.drain()
    row = await world.booking(booking)
    assert (row["status"], row["cancel_reason"]) == ("cancelled", "his_cancelled: 医生停诊")
    hold = await world.store.get_hold(booking)
    assert hold is not None
    assert hold.state.value == "cancelled"
    if PAYMENTS:
        assert [r["reason"] for r in await world.refunds(booking)] == ["his_cancelled"]


async def test_duplicated_delivery_creates_one_appointment(clean: World, admin: SimAdmin) -> None:
    """The create reaches the HIS twice (a replaying proxy): one appointment."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id)
    await admin.faults(duplicate_next=1, methods=["POST"])
    await world.submitter.drain()
    assert (await world.booking(booking))["status"] == "his_confirmed"
    found = await world.his.search_appointments(schedule_id=slot.schedule_id)
    assert [a.booking_id for a in found].count(booking) == 1


@pytest.mark.parametrize("refusal", ["full", "suspended"])
async def test_his_refusal_rejects_releases_and_refunds(
    clean: World, admin: SimAdmin, refusal: str
) -> None:
    """The HIS refuses (slot full through its window, or the doctor suspended) before we
    synced it: the booking ends rejected with the reason, its unit is free again, a
    refund is requested."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id, pay=True)
    if refusal == "full":
        free = (await world.his.get_schedule(slot.schedule_id)).slots  # type: ignore[union-attr]
        left = next(s for s in free if s.slot_id == slot.slot_id).free
        await admin.book_other(slot.slot_id, "window", left)
    else:
        await admin.suspend(slot.schedule_id)
    before = await world.counts(slot.slot_id)
    await world.submitter.drain()
    row = await world.booking(booking)
    assert row["status"] == "rejected"
    assert row["cancel_reason"] == f"his_rejected: {refusal}"
    after = await world.counts(slot.slot_id)
    assert before is not None
    assert after is not None
    assert (after.booked, after.remaining) == (before.booked - 1, before.remaining + 1)
    hold = await world.store.get_hold(booking)
    assert hold is not None
    assert hold.end_reason == "his_rejected"
    if PAYMENTS:
        assert [(r["reason"], r["status"]) for r in await world.refunds(booking)] == [
            ("his_rejected", "pending")
        ]
    assert await world.his.find_appointment(booking) is None
    assert world.submitter.stats.rejected_by_reason.get(refusal, 0) >= 1


async def test_patient_cancellation_reaches_the_his(clean: World) -> None:
    """A booking the patient cancels after it reached the HIS is cancelled there too."""
    world = clean
    slot = await world.fresh_slot(day=tomorrow() + timedelta(days=2))  # before the deadline
    booking = await world.book(slot.slot_id)
    await world.submitter.drain()
    outcome = await world.store.release(booking, account_id="acct", reason="patient_cancelled")
    await world.bookings.record(outcome.hold)
    await world.submitter.drain()
    appointment = await world.his.find_appointment(booking)
    assert appointment is not None
    assert (appointment.status, appointment.cancel_reason) == ("cancelled", "patient_cancelled")
    assert (await world.booking(booking))["his_cancelled_at"] is not None


async def test_two_submitters_share_the_queue_without_sending_twice(clean: World) -> None:
    """Two submitters draining at once claim each booking once (SKIP LOCKED)."""
    world = clean
    slots = [await world.fresh_slot(min_free=2) for _ in range(6)]
    made = await world.book_many([s.slot_id for s in slots for _ in range(2)])
    first, second = world.submitter_with(), world.submitter_with()
    claimed = await asyncio.gather(first.drain(), second.drain())
    assert sum(claimed) == len(made)
    assert first.stats.claimed + second.stats.claimed == len(made)
    for booking in made:
        assert (await world.booking(booking))["status"] == "his_confirmed"


async def test_a_lost_release_is_released_by_the_sweep(clean: World) -> None:
    """A booking rejected in Postgres whose Redis release never happened (a crash
    between the two) gets its unit back from the submitter's sweep."""
    world = clean
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id)
    async with world.pool.acquire() as connection:
        await connection.execute(
            "UPDATE bookings SET status = 'rejected', cancel_reason = 'his_rejected: full'"
            " WHERE id = $1",
            booking,
        )
    assert await world.submitter.sweep() >= 1
    hold = await world.store.get_hold(booking)
    assert hold is not None
    assert hold.state.value == "cancelled"


async def test_worker_loops_sync_and_submit(clean: World) -> None:
    """With INVENTORY_HIS_URL set, the worker's HIS loops sync the window and submit a
    booking on their own; without it there are none."""
    world = clean
    base = {"INVENTORY_REDIS_URL": world.redis.url, "INVENTORY_DATABASE_URL": world.database_url}
    stop = asyncio.Event()
    assert his_loops(Settings.from_env(base, for_api=False), world.store, stop=stop) == {}
    settings = Settings.from_env(
        base | {"INVENTORY_HIS_URL": world.sim.fhir_url, "INVENTORY_RECONCILE_INTERVAL_S": "600"},
        for_api=False,
    )
    slot = await world.fresh_slot()
    booking = await world.book(slot.slot_id)
    loops = his_loops(settings, world.store, stop=stop)
    assert sorted(loops) == ["his_reconciler", "his_submitter", "his_sync"]
    tasks = [asyncio.create_task(coro) for coro in loops.values()]
    try:
        for _ in range(200):
            if (await world.booking(booking))["status"] == "his_confirmed":
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert (await world.booking(booking))["status"] == "his_confirmed"
