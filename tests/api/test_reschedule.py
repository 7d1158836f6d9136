"""Rescheduling (改约) through a real API process: a booking moves to another slot of its
day, or to another day, keeping its payment; retries answer the same move; the limit,
the cancellation deadline, another account and a missing key are refused."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid


class Patient:
    """One account and one of its patients, booking through HTTP."""

    def __init__(self, api: ApiServer, http: aiohttp.ClientSession) -> None:
        self.api, self.http = api, http
        self.account = uid("acct")
        self.headers = api.headers(self.account)
        self.patient_id = ""

    async def register(self) -> Patient:
        self.patient_id = await register_patient(self.api, self.http, self.account)
        return self

    async def book(self, slot_id: str) -> str:
        """A confirmed booking of ``slot_id``: its id."""
        async with self.http.post(
            self.api.url + "/v1/holds",
            json={"slot_id": slot_id, "patient_id": self.patient_id, "channel": "wechat"},
            headers=self.headers | {"Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            hold = await answer.json()
            assert answer.status == 201, hold
        async with self.http.post(
            self.api.url + f"/v1/holds/{hold['hold_id']}/confirm",
            json={"payment_ref": "wx-" + uuid.uuid4().hex[:8]},
            headers=self.headers,
        ) as answer:
            assert answer.status == 200, await answer.text()
        return str(hold["hold_id"])

    async def reschedule(
        self, booking_id: str, slot_id: str, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = dict(self.headers)
        if key != "":
            headers["Idempotency-Key"] = key or uuid.uuid4().hex
        async with self.http.post(
            self.api.url + f"/v1/bookings/{booking_id}/reschedule",
            json={"slot_id": slot_id},
            headers=headers,
        ) as answer:
            return answer.status, await answer.json(content_type=None)

    async def booking(self, booking_id: str) -> dict[str, Any]:
        async with self.http.get(
            self.api.url + f"/v1/bookings/{booking_id}", headers=self.headers
        ) as answer:
            body: dict[str, Any] = await answer.json()
            assert answer.status == 200, body
            return body


async def remaining(api: ApiServer, http: aiohttp.ClientSession, schedule_id: str) -> list[int]:
    """The schedule's free units per slot, past the API's availability cache (0.5 s)."""
    await asyncio.sleep(0.6)
    async with http.get(api.url + f"/v1/schedules/{schedule_id}/slots") as answer:
        return [s["remaining"] for s in (await answer.json())["items"]]


async def test_reschedule_within_the_day(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """One script moves the booking: the old one cancelled (rescheduled), the new one
    confirmed with the same payment; the old unit is free again and the new one taken;
    the same key answers the same move."""
    cat = await Catalogue(api_server, http).create()
    schedule_id, slots, _ = await cat.schedule([1, 1])
    patient = await Patient(api_server, http).register()
    old_id = await patient.book(slots[0])
    assert await remaining(api_server, http, schedule_id) == [0, 1]

    key = uuid.uuid4().hex
    status, moved = await patient.reschedule(old_id, slots[1], key)
    assert status == 201, moved
    assert moved["from_booking_id"] == old_id
    assert moved["refund_fen"] == 0
    new = moved["booking"]
    assert (new["booking_id"], new["slot_id"], new["status"]) == (
        moved["reschedule_id"],
        slots[1],
        "confirmed",
    )
    old = await patient.booking(old_id)
    assert (old["status"], old["cancel_reason"]) == ("cancelled", "rescheduled")
    assert new["payment_ref"] == old["payment_ref"]
    assert await remaining(api_server, http, schedule_id) == [1, 0]

    status, again = await patient.reschedule(old_id, slots[1], key)
    assert (status, again["reschedule_id"]) == (201, moved["reschedule_id"])
    assert await remaining(api_server, http, schedule_id) == [1, 0]


async def test_reschedule_to_another_day_and_the_limit(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A move to another day (the two-step move across tags) keeps the payment; with
    one move allowed, the new booking cannot move again."""
    cat = await Catalogue(api_server, http).create(policy={"max_reschedules": 1})
    first_day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    first, first_slots, _ = await cat.schedule([1], visit_date=first_day)
    second, second_slots, _ = await cat.schedule([1, 1], visit_date=first_day + timedelta(days=1))
    patient = await Patient(api_server, http).register()
    old_id = await patient.book(first_slots[0])

    status, moved = await patient.reschedule(old_id, second_slots[0])
    assert status == 201, moved
    assert moved["booking"]["visit_date"] == (first_day + timedelta(days=1)).isoformat()
    assert (await patient.booking(old_id))["cancel_reason"] == "rescheduled"
    assert await remaining(api_server, http, first) == [1]
    assert await remaining(api_server, http, second) == [0, 1]

    status, refused = await patient.reschedule(moved["reschedule_id"], second_slots[1])
    assert (status, refused["code"]) == (409, "reschedule_limit"), refused
    assert refused["limit"] == 1
    assert await remaining(api_server, http, second) == [0, 1]


async def test_reschedule_refusals(api_server: ApiServer, http: aiohttp.ClientSession) -> None:
    """Past the cancellation deadline, a sold-out target, another account's booking, no
    Idempotency-Key: each refused, and nothing moves."""
    cat = await Catalogue(api_server, http).create()
    now = datetime.now(tz=UTC)
    _, late_slots, _ = await cat.schedule([1, 1], cancel_deadline=now - timedelta(minutes=1))
    patient = await Patient(api_server, http).register()
    late = await patient.book(late_slots[0])
    status, body = await patient.reschedule(late, late_slots[1])
    assert (status, body["code"]) == (409, "cancel_deadline_passed"), body

    schedule_id, slots, _ = await cat.schedule([1, 1], visit_date=(now + timedelta(days=4)).date())
    booked = await patient.book(slots[0])
    other = await Patient(api_server, http).register()
    await other.book(slots[1])
    status, body = await patient.reschedule(booked, slots[1])
    assert (status, body["code"]) == (409, "sold_out"), body

    status, body = await other.reschedule(booked, slots[0])
    assert (status, body["code"]) == (404, "not_found"), body
    status, body = await patient.reschedule(booked, slots[1], key="")
    assert (status, body["code"]) == (400, "idempotency_key_required"), body
    assert await remaining(api_server, http, schedule_id) == [0, 0]
    assert (await patient.booking(booked))["status"] == "confirmed"
