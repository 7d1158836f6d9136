"""What a patient sees, through a real API process: every instant in the hospital's time
zone with its offset, the cancellation deadline and whether cancelling is still
possible on schedules, slots, holds and bookings, and the whole booking view from
confirm and cancel (HIS number, visit time and place included)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]

from .conftest import ApiServer
from .helpers import Catalogue, patient_body, register_patient, uid

INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT")


def instants(value: Any, path: str = "") -> dict[str, str]:
    """Every instant text in a JSON value, by its path."""
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= instants(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= instants(item, f"{path}[{index}]")
    elif isinstance(value, str) and INSTANT.match(value):
        found[path] = value
    return found


def assert_offset(value: Any, offset: str) -> None:
    """Every instant in ``value`` is written with ``offset`` (and parses back)."""
    found = instants(value)
    assert found, value
    wrong = {path: text for path, text in found.items() if not text.endswith(offset)}
    assert not wrong, wrong
    for text in found.values():
        datetime.fromisoformat(text)


async def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    """GET ``url``; assert 200 and return the JSON."""
    async with http.get(url, **kwargs) as answer:
        body = await answer.json()
        assert answer.status == 200, body
        return body


async def post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], status: int, **kwargs: Any
) -> Any:
    """POST ``body``; assert ``status`` and return the JSON."""
    async with http.post(url, json=body, **kwargs) as answer:
        data = await answer.json(content_type=None)
        assert answer.status == status, data
        return data


async def hold_for(
    api: ApiServer, http: aiohttp.ClientSession, slot_id: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """A fresh account, its patient and a hold on ``slot_id``."""
    account = uid("acct")
    headers = api.headers(account)
    patient_id = await register_patient(api, http, account)
    hold = await post(
        http,
        api.url + "/v1/holds",
        {"slot_id": slot_id, "patient_id": patient_id, "channel": "wechat"},
        201,
        headers=headers | {"Idempotency-Key": uuid.uuid4().hex},
    )
    return headers, hold


async def test_every_instant_is_in_the_hospitals_time_zone(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A 09:00 Beijing session reads 09:00+08:00 on every route, never 01:00+00:00."""
    cat = await Catalogue(api_server, http).create()
    schedule_id, slots, day = await cat.schedule([2])
    base = api_server.url
    day_view = await get(
        http, base + f"/v1/departments/{cat.department_id}/schedules?date={day.isoformat()}"
    )
    assert_offset(day_view, "+08:00")
    assert day_view["items"][0]["starts_at"] == f"{day.isoformat()}T09:00:00+08:00"
    slot_view = await get(http, base + f"/v1/schedules/{schedule_id}/slots")
    assert_offset(slot_view, "+08:00")
    assert slot_view["items"][0]["starts_at"] == f"{day.isoformat()}T09:00:00+08:00"
    legacy = await get(
        http, base + f"/api/doctor/schedule?deptId={cat.department_id}&date={day.isoformat()}"
    )
    assert_offset(legacy["data"], "+08:00")
    headers, hold = await hold_for(api_server, http, slots[0])
    assert_offset(hold, "+08:00")
    assert_offset(await get(http, base + f"/v1/holds/{hold['hold_id']}", headers=headers), "+08:00")
    booking = await post(
        http,
        base + f"/v1/holds/{hold['hold_id']}/confirm",
        {"payment_ref": "wx-1"},
        200,
        headers=headers,
    )
    assert_offset(booking, "+08:00")
    assert booking["slot_starts_at"] == f"{day.isoformat()}T09:00:00+08:00"
    assert_offset(await get(http, base + "/v1/bookings", headers=headers), "+08:00")
    # The hospital's own zone, whatever it is: Urumqi is UTC+6.
    await cat.put(
        f"/v1/operator/hospitals/{cat.hospital_id}",
        {"name": "Demo Hospital", "timezone": "Asia/Urumqi"},
    )
    assert_offset(
        await get(http, base + f"/v1/bookings/{hold['hold_id']}", headers=headers), "+06:00"
    )
    day_view = await get(
        http, base + f"/v1/departments/{cat.department_id}/schedules?date={day.isoformat()}"
    )
    assert day_view["items"][0]["starts_at"] == f"{day.isoformat()}T07:00:00+06:00"


async def test_the_cancellation_deadline_is_shown_everywhere(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Schedules, slots, holds and bookings carry cancel_deadline and cancellable."""
    now = datetime.now(tz=UTC)
    cat = await Catalogue(api_server, http).create()
    deadline = (now + timedelta(days=1)).replace(microsecond=0)
    open_id, open_slots, day = await cat.schedule([1], cancel_deadline=deadline)
    closed_id, closed_slots, _ = await cat.schedule(
        [1], cancel_deadline=now - timedelta(minutes=5), session="afternoon", visit_date=day
    )
    base = api_server.url
    expected = deadline.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=8)
    expected_text = expected.isoformat() + "+08:00"
    day_view = await get(
        http, base + f"/v1/departments/{cat.department_id}/schedules?date={day.isoformat()}"
    )
    by_id = {item["schedule_id"]: item for item in day_view["items"]}
    assert by_id[open_id]["cancel_deadline"] == expected_text
    assert (by_id[open_id]["cancellable"], by_id[closed_id]["cancellable"]) == (True, False)
    for schedule_id, cancellable in ((open_id, True), (closed_id, False)):
        view = await get(http, base + f"/v1/schedules/{schedule_id}/slots")
        assert view["cancellable"] is cancellable
        assert [s["cancellable"] for s in view["items"]] == [cancellable]
        assert view["items"][0]["cancel_deadline"] == view["cancel_deadline"]

    headers, hold = await hold_for(api_server, http, closed_slots[0])
    assert hold["cancellable"] is False
    booking = await post(
        http,
        base + f"/v1/holds/{hold['hold_id']}/confirm",
        {"payment_ref": "wx-2"},
        200,
        headers=headers,
    )
    assert booking["cancellable"] is False
    refused = await post(
        http, base + f"/v1/bookings/{hold['hold_id']}/cancel", {}, 409, headers=headers
    )
    assert refused["code"] == "cancel_deadline_passed"

    headers, hold = await hold_for(api_server, http, open_slots[0])
    assert (hold["cancel_deadline"], hold["cancellable"]) == (expected_text, True)
    booking = await post(
        http,
        base + f"/v1/holds/{hold['hold_id']}/confirm",
        {"payment_ref": "wx-3"},
        200,
        headers=headers,
    )
    assert (booking["cancel_deadline"], booking["cancellable"]) == (expected_text, True)
    cancelled = await post(
        http, base + f"/v1/bookings/{hold['hold_id']}/cancel", {}, 200, headers=headers
    )
    assert (cancelled["status"], cancelled["cancellable"]) == ("cancelled", False)


async def test_confirm_and_cancel_answer_the_whole_booking(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Confirm and cancel answer what GET booking answers, HIS number and place included."""
    cat = await Catalogue(api_server, http).create()
    _, slots, _ = await cat.schedule([1])
    base = api_server.url
    headers, hold = await hold_for(api_server, http, slots[0])
    booking_url = base + f"/v1/bookings/{hold['hold_id']}"
    confirmed = await post(
        http,
        base + f"/v1/holds/{hold['hold_id']}/confirm",
        {"payment_ref": "wx-4"},
        200,
        headers=headers,
    )
    assert confirmed == await get(http, booking_url, headers=headers)
    assert confirmed["doctor_name"] == "Dr Li"
    assert confirmed["location"] == "Building 2, Room 301"
    # The HIS numbers it (as the submitter records the HIS's answer).
    visit = datetime.now(tz=UTC) + timedelta(days=3)
    connection = await asyncpg.connect(api_server.database_url)
    try:
        await connection.execute(
            "UPDATE bookings SET status = 'his_confirmed', his_appointment_no = 'A0012',"
            " visit_time = $2, place = '门诊楼2层 3诊室', his_confirmed_at = now()"
            " WHERE id = $1",
            hold["hold_id"],
            visit,
        )
    finally:
        await connection.close()
    cancelled = await post(http, booking_url + "/cancel", {}, 200, headers=headers)
    assert cancelled == await get(http, booking_url, headers=headers)
    assert cancelled["status"] == "cancelled"
    assert cancelled["his_appointment_no"] == "A0012"
    assert cancelled["place"] == "门诊楼2层 3诊室"
    assert datetime.fromisoformat(cancelled["visit_time"]) == visit


async def test_a_second_account_is_linked_with_201_and_the_phone_on_record(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A new link answers 201 (a repeat 200); the phone stays the one on record."""
    url = api_server.url + "/v1/patients"
    body = patient_body(phone="13812345678")
    first_account, second_account = api_server.headers(uid("a")), api_server.headers(uid("b"))
    first = await post(http, url, body, 201, headers=first_account)
    # The same person from a family member's account, with that member's own number.
    other_phone = body | {"phone": "13900001111", "relation": "parent"}
    second = await post(http, url, other_phone, 201, headers=second_account)
    assert second["patient_id"] == first["patient_id"]
    assert (second["phone"], second["relation"]) == ("138****5678", "parent")
    again = await post(http, url, other_phone, 200, headers=second_account)
    assert again == second
    listed = await get(http, url, headers=second_account)
    assert [(p["patient_id"], p["phone"]) for p in listed["items"]] == [
        (first["patient_id"], "138****5678")
    ]
    assert (await get(http, url, headers=first_account))["items"][0]["relation"] == "self"
