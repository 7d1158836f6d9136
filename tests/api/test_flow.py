"""The patient's whole path through a real API process: catalogue -> patient -> hold ->
confirm -> booking -> cancel."""

from __future__ import annotations

import uuid

import aiohttp

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid


async def test_patient_path(api_server: ApiServer, http: aiohttp.ClientSession) -> None:
    """From the hospital list to a confirmed and then cancelled booking."""
    cat = await Catalogue(api_server, http).create()
    schedule_id, slots, day = await cat.schedule([2, 1])
    base = api_server.url
    async with http.get(base + "/v1/hospitals") as answer:
        hospitals = (await answer.json())["items"]
    assert cat.hospital_id in {h["hospital_id"] for h in hospitals}
    async with http.get(base + f"/v1/hospitals/{cat.hospital_id}/departments") as answer:
        tree = await answer.json()
    assert tree["departments"][0]["department_id"] == cat.department_id
    async with http.get(base + f"/v1/departments/{cat.department_id}/doctors") as answer:
        doctors = (await answer.json())["items"]
    assert doctors[0]["title"] == "主任医师"
    url = base + f"/v1/departments/{cat.department_id}/schedules?date={day.isoformat()}"
    async with http.get(url) as answer:
        day_view = (await answer.json())["items"]
    assert day_view[0]["remaining"] == 3
    assert day_view[0]["released"] is True
    async with http.get(base + f"/v1/schedules/{schedule_id}/slots") as answer:
        availability = await answer.json()
    assert [s["remaining"] for s in availability["items"]] == [2, 1]

    account = uid("acct")
    headers = api_server.headers(account)
    patient_id = await register_patient(api_server, http, account)
    key = uuid.uuid4().hex
    body = {"slot_id": slots[1], "patient_id": patient_id, "channel": "wechat"}
    async with http.post(
        base + "/v1/holds", json=body, headers=headers | {"Idempotency-Key": key}
    ) as answer:
        hold = await answer.json()
        assert answer.status == 201, hold
    async with http.post(
        base + "/v1/holds", json=body, headers=headers | {"Idempotency-Key": key}
    ) as answer:
        assert answer.status == 201
        assert answer.headers["Idempotent-Replayed"] == "true"
        assert (await answer.json())["hold_id"] == hold["hold_id"]
    async with http.get(base + f"/v1/holds/{hold['hold_id']}", headers=headers) as answer:
        assert (await answer.json())["state"] == "held"
    async with http.post(
        base + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": "wx-1"},
        headers=headers,
    ) as answer:
        booking = await answer.json()
        assert answer.status == 200, booking
    assert booking["status"] == "confirmed"
    async with http.get(base + "/v1/bookings", headers=headers) as answer:
        bookings = (await answer.json())["items"]
    assert [b["booking_id"] for b in bookings] == [hold["hold_id"]]
    assert bookings[0]["doctor_title"] == "主任医师"
    async with http.post(
        base + f"/v1/bookings/{hold['hold_id']}/cancel", json={}, headers=headers
    ) as answer:
        cancelled = await answer.json()
        assert answer.status == 200, cancelled
    assert cancelled["status"] == "cancelled"
    async with http.get(base + f"/v1/bookings/{hold['hold_id']}", headers=headers) as answer:
        assert (await answer.json())["status"] == "cancelled"
    async with http.get(base + f"/api/appointment/available?scheduleId={schedule_id}") as answer:
        legacy = await answer.json()
    assert legacy["code"] == 0
    assert legacy["data"]["items"][1]["remaining"] == 1
