"""The operators' desk routes against a real API, Redis and Postgres: a hospital's release
day with every schedule's units now and its waiting rooms, bookings found by id, HIS
number and phone (full or masked), an operator's cancel (past the patient's deadline), a
no-show once its time window has begun, a suspension's preview, and the bans in force."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from inventory.store.slot_store import SlotStore

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid
from .test_operator_scope import audit_rows, operator_of


async def _call(
    http: aiohttp.ClientSession,
    api: ApiServer,
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(
        method, api.url + path, json=json, params=params, headers=headers
    ) as answer:
        return answer.status, await answer.json(content_type=None)


async def _hold(
    api: ApiServer, http: aiohttp.ClientSession, slot_id: str, *, phone: str = "13812345678"
) -> tuple[str, dict[str, str]]:
    """A hold of ``slot_id`` by a new account's new patient: (hold id, account headers)."""
    account = uid("acct")
    patient_id = await register_patient(api, http, account, phone=phone)
    headers = api.headers(account)
    status, hold = await _call(
        http,
        api,
        "POST",
        "/v1/holds",
        headers | {"Idempotency-Key": uuid.uuid4().hex},
        json={"slot_id": slot_id, "patient_id": patient_id, "channel": "web"},
    )
    assert status == 201, hold
    return str(hold["hold_id"]), headers


async def _book(
    api: ApiServer, http: aiohttp.ClientSession, slot_id: str, *, phone: str = "13812345678"
) -> tuple[str, dict[str, str]]:
    hold_id, headers = await _hold(api, http, slot_id, phone=phone)
    status, booking = await _call(
        http, api, "POST", f"/v1/holds/{hold_id}/confirm", headers, json={"payment_ref": "wx-d"}
    )
    assert status == 200, booking
    return hold_id, headers


async def _sql(api: ApiServer, statement: str, *args: Any) -> None:
    """A change made the way the HIS or time would make it (no route does it)."""
    connection = await asyncpg.connect(api.database_url)
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


async def test_the_release_day_shows_every_schedules_units_and_its_waiting_room(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue = await Catalogue(api_server, http).create()
    schedule_id, slots, day = await catalogue.schedule([3, 2])
    queued, _, _ = await catalogue.schedule([4], released=False, session="afternoon")
    await _book(api_server, http, slots[0])
    await _hold(api_server, http, slots[0])
    own = operator_of(api_server, catalogue.hospital_id)
    status, opened = await _call(
        http, api_server, "POST", "/v1/operator/releases", own, json={"schedule_ids": [queued]}
    )
    assert status == 201, opened

    path = f"/v1/operator/hospitals/{catalogue.hospital_id}/day"
    status, view = await _call(http, api_server, "GET", path, own, params={"date": day.isoformat()})
    assert status == 200, view
    by_id = {item["schedule_id"]: item for item in view["items"]}
    assert set(by_id) == {schedule_id, queued}
    first = by_id[schedule_id]
    assert (first["capacity"], first["remaining"], first["held"], first["booked"]) == (5, 3, 1, 1)
    assert first["slots"][0]["slot_id"] == slots[0]
    assert (first["slots"][0]["held"], first["slots"][0]["booked"]) == (1, 1)
    assert (first["department_name"], first["doctor_name"]) == ("Cardiology", "Dr Li")
    assert (first["release_id"], first["released"]) == (None, True)
    assert by_id[queued]["release_id"] == opened["release_id"]
    assert by_id[queued]["released"] is False
    (room,) = view["releases"]
    assert (room["release_id"], room["state"], room["joined"]) == (opened["release_id"], "open", 0)
    assert view["generated_at"].endswith("+08:00")

    # Another hospital's operator sees nothing; a day is required.
    status, body = await _call(
        http, api_server, "GET", path, operator_of(api_server, uid("h")), params={"date": "x"}
    )
    assert (status, body["code"]) == (404, "not_found")
    status, body = await _call(http, api_server, "GET", path, own)
    assert (status, body["code"]) == (422, "validation_failed")
    status, empty = await _call(http, api_server, "GET", path, own, params={"date": "2020-01-01"})
    assert (status, empty["items"], empty["releases"]) == (200, [], [])


async def test_the_release_day_counts_each_schedules_waitlist(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A sold-out schedule with two patients on its 候补 waitlist shows two waitlisted."""
    catalogue = await Catalogue(api_server, http).create(policy={"one_per_day": False})
    schedule_id, slots, day = await catalogue.schedule([1])
    await _book(api_server, http, slots[0])
    for _ in range(2):
        account = uid("acct")
        patient_id = await register_patient(api_server, http, account)
        status, entry = await _call(
            http,
            api_server,
            "POST",
            f"/v1/schedules/{schedule_id}/waitlist",
            api_server.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
            json={"patient_id": patient_id, "channel": "web"},
        )
        assert status == 201, entry
    status, view = await _call(
        http,
        api_server,
        "GET",
        f"/v1/operator/hospitals/{catalogue.hospital_id}/day",
        operator_of(api_server, catalogue.hospital_id),
        params={"date": day.isoformat()},
    )
    assert status == 200, view
    (item,) = view["items"]
    assert (item["remaining"], item["booked"], item["waitlisted"]) == (0, 1, 2), item


async def test_bookings_are_found_by_id_his_number_and_phone(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue = await Catalogue(api_server, http).create()
    _, slots, day = await catalogue.schedule([3])
    phone = "139" + f"{uuid.uuid4().int % 10**8:08d}"
    booking_id, _ = await _book(api_server, http, slots[0], phone=phone)
    other_id, _ = await _book(api_server, http, slots[0])
    number = "A" + uuid.uuid4().hex[:6]
    await _sql(
        api_server,
        "UPDATE bookings SET status = 'his_confirmed', his_appointment_no = $2,"
        " his_appointment_id = 'appt-1', submitted_at = now(), his_confirmed_at = now()"
        " WHERE id = $1",
        booking_id,
        number,
    )
    own = operator_of(api_server, catalogue.hospital_id)
    path = f"/v1/operator/hospitals/{catalogue.hospital_id}/bookings"

    async def find(**params: str) -> list[str]:
        status, found = await _call(http, api_server, "GET", path, own, params=params)
        assert status == 200, found
        return [item["booking_id"] for item in found["items"]]

    assert await find(booking_id=booking_id) == [booking_id]
    assert await find(his_no=number) == [booking_id]
    masked = phone[:3] + "****" + phone[-4:]
    assert await find(phone=phone, date=day.isoformat()) == [booking_id]
    assert await find(phone=masked, date=day.isoformat()) == [booking_id]
    assert await find(phone=masked) == []  # today, by default: the visit is days ahead
    assert sorted(await find(date=day.isoformat())) == sorted([booking_id, other_id])

    status, found = await _call(http, api_server, "GET", path, own, params={"his_no": number})
    (item,) = found["items"]
    assert (item["patient_phone"], item["patient_name"]) == (masked, "张*")
    assert (item["his"]["appointment_id"], item["status"]) == ("appt-1", "his_confirmed")
    assert (item["payment"], item["refund"]) == (None, None)
    assert item["visit"] == {"checked_in_at": None, "checked_in_by": None, "no_show_at": None}

    for bad in ({}, {"phone": "12345"}, {"booking_id": "nope"}, {"limit": "0"}):
        status, body = await _call(http, api_server, "GET", path, own, params=bad)
        assert (status, body["code"]) == (422, "validation_failed"), bad
    stranger = operator_of(api_server, uid("h"))
    status, body = await _call(
        http, api_server, "GET", path, stranger, params={"booking_id": booking_id}
    )
    assert status == 404


async def test_an_operator_cancels_past_the_patients_deadline_and_the_unit_returns(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue = await Catalogue(api_server, http).create()
    past = datetime.now(tz=UTC) - timedelta(minutes=5)
    schedule_id, slots, _ = await catalogue.schedule([1], cancel_deadline=past)
    booking_id, patient = await _book(api_server, http, slots[0])
    status, refused = await _call(
        http, api_server, "POST", f"/v1/bookings/{booking_id}/cancel", patient, json={}
    )
    assert (status, refused["code"]) == (409, "cancel_deadline_passed")

    own = operator_of(api_server, catalogue.hospital_id)
    path = f"/v1/operator/bookings/{booking_id}/cancel"
    status, body = await _call(http, api_server, "POST", path, own, json={})
    assert (status, body["code"]) == (422, "validation_failed")
    request_id = "desk-" + uuid.uuid4().hex
    status, cancelled = await _call(
        http,
        api_server,
        "POST",
        path,
        own | {"X-Request-Id": request_id},
        json={"reason": "医生临时停诊"},
    )
    assert status == 200, cancelled
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_reason"] == "operator_cancelled: 医生临时停诊"
    # Audited with the booking before and after; the patient is told (the notifier's
    # event), as for any booking the hospital ends.
    (entry,) = await audit_rows(api_server, request_id)
    assert (entry["hospital_id"], entry["status"]) == (catalogue.hospital_id, 200)
    assert (entry["before"]["status"], entry["after"]["status"]) == ("confirmed", "cancelled")
    connection = await asyncpg.connect(api_server.database_url)
    try:
        told = await connection.fetch(
            "SELECT type, payload->>'code' AS code FROM lifecycle_events WHERE booking_id = $1",
            booking_id,
        )
    finally:
        await connection.close()
    assert [(e["type"], e["code"]) for e in told] == [
        ("booking_ended_by_hospital", "operator_cancelled")
    ]
    status, slots_view = await _call(
        http, api_server, "GET", f"/v1/schedules/{schedule_id}/slots", {}
    )
    assert slots_view["items"][0]["remaining"] == 1
    status, again = await _call(http, api_server, "POST", path, own, json={"reason": "again"})
    assert (status, again["code"]) == (409, "booking_not_open")
    stranger = operator_of(api_server, uid("h"))
    status, body = await _call(http, api_server, "POST", path, stranger, json={"reason": "x"})
    assert (status, body["code"]) == (404, "not_found")


async def test_a_no_show_is_marked_once_the_session_has_begun(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue = await Catalogue(api_server, http).create()
    schedule_id, slots, _ = await catalogue.schedule([2, 2])
    booking_id, _ = await _book(api_server, http, slots[1])
    own = operator_of(api_server, catalogue.hospital_id)
    path = f"/v1/operator/bookings/{booking_id}/no-show"
    status, body = await _call(http, api_server, "POST", path, own)
    assert (status, body["code"]) == (409, "no_show_too_early"), body
    # The session begins, but not the booking's window (its second): still too early.
    await _sql(
        api_server,
        "UPDATE schedules SET release_at = now() - interval '2 hours',"
        " starts_at = now() - interval '1 hour', cancel_deadline = now() - interval '1 hour'"
        " WHERE id = $1",
        schedule_id,
    )
    await _sql(
        api_server,
        "UPDATE slots SET starts_at = now() - interval '1 hour',"
        " ends_at = now() - interval '30 minutes' WHERE id = $1",
        slots[0],
    )
    status, body = await _call(http, api_server, "POST", path, own)
    assert (status, body["code"]) == (409, "no_show_too_early"), body
    # Its window begins too (moved into the past, as time would move it).
    await _sql(
        api_server,
        "UPDATE slots SET starts_at = now() - interval '30 minutes', ends_at = now() WHERE id = $1",
        slots[1],
    )
    status, marked = await _call(http, api_server, "POST", path, own)
    assert status == 200, marked
    assert (marked["booking_id"], marked["status"]) == (booking_id, "no_show")
    status, again = await _call(http, api_server, "POST", path, own)
    assert (status, again["code"]) == (409, "booking_not_open")
    status, found = await _call(
        http,
        api_server,
        "GET",
        f"/v1/operator/hospitals/{catalogue.hospital_id}/bookings",
        own,
        params={"booking_id": booking_id},
    )
    assert found["items"][0]["visit"]["no_show_at"] == marked["no_show_at"]
    status, body = await _call(http, api_server, "POST", path, operator_of(api_server, uid("h")))
    assert (status, body["code"]) == (404, "not_found")


async def test_a_suspension_preview_names_what_suspending_would_end(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue = await Catalogue(api_server, http).create()
    schedule_id, slots, _ = await catalogue.schedule([3, 3])
    one, _ = await _book(api_server, http, slots[0])
    two, _ = await _book(api_server, http, slots[1])
    await _hold(api_server, http, slots[1])
    own = operator_of(api_server, catalogue.hospital_id)
    path = f"/v1/operator/schedules/{schedule_id}/suspension-preview"
    status, preview = await _call(http, api_server, "GET", path, own)
    assert status == 200, preview
    assert sorted(b["booking_id"] for b in preview["bookings"]) == sorted([one, two])
    assert (preview["status"], preview["holds"], preview["kept"]) == ("open", 1, 0)
    # Payments are off here: no fee was paid through a provider, none to refund.
    assert preview["refunds_fen"] == 0
    status, body = await _call(http, api_server, "GET", path, operator_of(api_server, uid("h")))
    assert (status, body["code"]) == (404, "not_found")
    status, body = await _call(
        http, api_server, "GET", "/v1/operator/schedules/no-such/suspension-preview", own
    )
    assert (status, body["code"]) == (404, "not_found")


async def test_the_blacklist_lists_the_bans_in_force_until_lifted(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    catalogue = await Catalogue(api_server, http).create()
    hospital = catalogue.hospital_id
    account = uid("acct")
    patient_id = await register_patient(api_server, http, account, phone="13700001111")
    # A ban as the no-show rule makes it (in the store) and the persister projects it
    # (patient_bans; no worker runs beside this API).
    until = datetime.now(tz=UTC) + timedelta(days=7)
    redis = Redis.from_url(api_server.settings.redis_url)
    try:
        store = await SlotStore.connect_scripts(redis)
        await store.ban_patient(
            patient_id,
            hospital_id=hospital,
            until_ms=int(until.timestamp() * 1000),
            reason="no_show_rule",
        )
    finally:
        await redis.aclose()
    await _sql(
        api_server,
        "INSERT INTO patient_bans (patient_id, hospital_id, banned_until, reason, decided_at)"
        " VALUES ($1, $2, $3, 'no_show_rule', now())",
        patient_id,
        hospital,
        until,
    )
    own = operator_of(api_server, hospital)
    path = f"/v1/operator/hospitals/{hospital}/bans"
    status, bans = await _call(http, api_server, "GET", path, own)
    assert status == 200, bans
    (ban,) = bans["items"]
    assert (ban["patient_id"], ban["reason"], ban["patient_phone"]) == (
        patient_id,
        "no_show_rule",
        "137****1111",
    )
    status, lifted = await _call(
        http,
        api_server,
        "POST",
        f"/v1/operator/hospitals/{hospital}/patients/{patient_id}/bans/lift",
        own,
        json={"reason": "院方核实"},
    )
    assert (status, lifted["lifted"]) == (200, True)
    # Lifted in the store: gone from the list before Postgres hears of it.
    status, bans = await _call(http, api_server, "GET", path, own)
    assert (status, bans["items"]) == (200, [])
    status, body = await _call(http, api_server, "GET", path, operator_of(api_server, uid("h")))
    assert (status, body["code"]) == (404, "not_found")
