"""Doctor substitution (替诊) through a real API process: an operator offers another
doctor's schedule (on another day) to a schedule's bookings and suspends it; the
suspension's sweep leaves offered bookings alone; one patient accepts (the booking moves,
payment kept), one declines (cancelled), one lets the offer run out (cancelled by the
sweep); answers replay and a second answer is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from redis.asyncio import Redis

from inventory.his.suspension import sweep_suspensions
from inventory.record.pool import create_pool
from inventory.store import keys
from inventory.store.slot_store import SlotStore

from .conftest import ApiServer
from .helpers import Catalogue, uid
from .test_reschedule import Patient


async def answer(
    patient: Patient, booking_id: str, accept: bool, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    async with patient.http.post(
        patient.api.url + f"/v1/bookings/{booking_id}/substitution",
        json={"accept": accept},
        headers=patient.headers | {"Idempotency-Key": key or uuid.uuid4().hex},
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_offer_accept_decline_and_run_out(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    cat = await Catalogue(api_server, http).create()
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    suspended, slots, _ = await cat.schedule([2, 2], visit_date=day)
    first_doctor = cat.doctor_id
    cat.doctor_id = uid("doc")
    await cat.put(
        f"/v1/operator/doctors/{cat.doctor_id}",
        {
            "hospital_id": cat.hospital_id,
            "department_id": cat.department_id,
            "name": "Dr Wang",
            "title": "副主任医师",
            "specialty": "arrhythmia",
        },
    )
    target, target_slots, _ = await cat.schedule([2, 2], visit_date=day + timedelta(days=1))
    cat.doctor_id = first_doctor
    accepting, declining, silent = [await Patient(api_server, http).register() for _ in range(3)]
    kept = await accepting.book(slots[1])
    declined = await declining.book(slots[0])
    lapsed = await silent.book(slots[0])

    async with http.post(
        api_server.url + f"/v1/operator/schedules/{suspended}/substitute",
        json={"target_schedule_id": target, "respond_within_s": 600},
        headers=cat.op,
    ) as response:
        offered = await response.json()
        assert response.status == 200, offered
    assert offered["booking_ids"] == sorted([kept, declined, lapsed])

    redis = Redis.from_url(api_server.settings.redis_url, decode_responses=True)
    pool = await create_pool(api_server.database_url, min_size=1, max_size=2)
    store = await SlotStore.connect_scripts(redis)
    try:
        # The suspension's sweep leaves offered bookings alone.
        await sweep_suspensions(pool, store)
        for patient, booking in ((accepting, kept), (declining, declined), (silent, lapsed)):
            assert (await patient.booking(booking))["status"] == "confirmed"
        async with http.get(
            api_server.url + f"/v1/bookings/{kept}/substitution", headers=accepting.headers
        ) as response:
            offer = await response.json()
            assert response.status == 200, offer
        assert (offer["status"], offer["target_schedule_id"]) == ("offered", target)

        key = uuid.uuid4().hex
        status, moved = await answer(accepting, kept, True, key)
        assert status == 200, moved
        assert moved["accepted"] is True
        new = moved["booking"]
        # The same place in the substitute's session: the second slot.
        assert (new["schedule_id"], new["slot_id"], new["status"]) == (
            target,
            target_slots[1],
            "confirmed",
        )
        assert (await accepting.booking(kept))["cancel_reason"] == "rescheduled"
        status, again = await answer(accepting, kept, True, key)
        assert (status, again["booking"]["booking_id"]) == (200, new["booking_id"])

        status, refused = await answer(declining, declined, False)
        assert (status, refused["accepted"]) == (200, False), refused
        assert refused["booking"]["status"] == "cancelled"
        status, late = await answer(declining, declined, True)
        assert (status, late["code"]) == (409, "conflict"), late

        # The silent patient's offer runs out: the next sweep cancels that booking.
        await pool.execute(
            "UPDATE substitution_offers SET respond_by = now() - interval '1 second'"
            " WHERE booking_id = $1",
            lapsed,
        )
        await sweep_suspensions(pool, store)
        lapsed_view = await silent.booking(lapsed)
        assert lapsed_view["status"] == "cancelled"
        assert lapsed_view["cancel_reason"].startswith("suspended")

        tag = keys.department_day_tag(cat.department_id, day)
        counts = await store.slot_counts(tag, slots)
        assert [c.booked for c in counts.values()] == [0, 0]
        target_tag = keys.department_day_tag(cat.department_id, day + timedelta(days=1))
        counts = await store.slot_counts(target_tag, target_slots)
        assert [counts[s].booked for s in target_slots] == [0, 1]
        assert all(c.conserved for c in counts.values())
    finally:
        await pool.close()
        await redis.aclose()
