"""The 候补 waitlist over HTTP against a real API process: join a sold-out schedule, see
the entry's position, get the offer when a unit frees, leave; and every refusal a
problem+json with its stable code, in Chinese by default and English on request."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid


async def reserve(
    api: ApiServer, http: aiohttp.ClientSession, account: str, patient: str, slot: str
) -> dict[str, Any]:
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": slot, "patient_id": patient, "channel": "app"},
        headers=api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        data: dict[str, Any] = await answer.json()
        assert answer.status == 201, data
        return data


async def join(
    api: ApiServer,
    http: aiohttp.ClientSession,
    account: str,
    schedule: str,
    body: Any,
    *,
    key: str | None = None,
    language: str | None = None,
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    headers = api.headers(account)
    if key != "":
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
    if language:
        headers["Accept-Language"] = language
    async with http.post(
        api.url + f"/v1/schedules/{schedule}/waitlist", json=body, headers=headers
    ) as answer:
        return answer.status, await answer.json(content_type=None), answer


async def sold_out_schedule(
    api: ApiServer, http: aiohttp.ClientSession, policy: dict[str, Any] | None = None
) -> tuple[str, str, str, str]:
    """A schedule whose one unit is held: (schedule, slot, the holder, the hold id)."""
    cat = await Catalogue(api, http).create(policy=policy)
    schedule, slots, _ = await cat.schedule([1])
    holder = uid("holder")
    patient = await register_patient(api, http, holder)
    hold = await reserve(api, http, holder, patient, slots[0])
    return schedule, slots[0], holder, hold["hold_id"]


async def get(api: ApiServer, http: aiohttp.ClientSession, account: str, path: str) -> Any:
    async with http.get(api.url + path, headers=api.headers(account)) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def test_join_see_offer_and_leave(api_server: ApiServer, http: aiohttp.ClientSession) -> None:
    """Two patients join in order; when the held unit is released the first is offered
    it as a hold of their own (readable at /v1/holds), the second moves up; leaving
    passes the offer on; a retried join answers the same entry."""
    api = api_server
    schedule, slot, holder, hold_id = await sold_out_schedule(api, http)
    accounts = [uid("wl"), uid("wl")]
    patients = [await register_patient(api, http, a) for a in accounts]
    entries = []
    for account, patient in zip(accounts, patients, strict=True):
        status, data, _ = await join(
            api, http, account, schedule, {"patient_id": patient, "channel": "wechat"}, key="k1"
        )
        assert status == 201, data
        entries.append(data)
    assert [e["position"] for e in entries] == [1, 2]
    assert entries[0]["state"] == "waiting"
    assert entries[0]["offer"] is None
    assert entries[0]["joined_at"].endswith("+08:00")
    status, again, answer = await join(
        api, http, accounts[0], schedule, {"patient_id": patients[0], "channel": "wechat"}, key="k1"
    )
    assert status == 201
    assert answer.headers["Idempotent-Replayed"] == "true"
    assert again == entries[0]

    async with http.delete(
        api.url + f"/v1/holds/{hold_id}",
        headers=api.headers(holder) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        assert answer.status == 200, await answer.text()
    first = await get(api, http, accounts[0], f"/v1/waitlist/{entries[0]['entry_id']}")
    assert first["state"] == "offered"
    assert first["position"] is None
    offer = first["offer"]
    assert offer["slot_id"] == slot
    assert offer["state"] == "held"
    hold = await get(api, http, accounts[0], f"/v1/holds/{offer['hold_id']}")
    assert hold["patient_id"] == patients[0]
    assert hold["deadline"] == offer["deadline"]
    second = await get(api, http, accounts[1], f"/v1/waitlist/{entries[1]['entry_id']}")
    assert second["position"] == 1

    async with http.delete(
        api.url + f"/v1/waitlist/{entries[0]['entry_id']}", headers=api.headers(accounts[0])
    ) as answer:
        left = await answer.json()
        assert answer.status == 200, left
    assert left["state"] == "left"
    assert left["offer"]["state"] == "released"
    second = await get(api, http, accounts[1], f"/v1/waitlist/{entries[1]['entry_id']}")
    assert second["state"] == "offered"


async def test_refusals_are_problems_with_stable_codes(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A schedule with a free unit, an unknown schedule, another account's patient or
    entry, a missing key, a bad body and a patient past the waitlist limit are each
    refused with their own code, in Chinese by default and English on request."""
    api = api_server
    account = uid("wl")
    patient = await register_patient(api, http, account)
    body = {"patient_id": patient, "channel": "app"}
    cat = await Catalogue(api, http).create(policy={"waitlist_max_per_patient": 1})
    free_schedule, _, _ = await cat.schedule([2])
    status, data, answer = await join(api, http, account, free_schedule, body)
    assert (status, data["code"]) == (409, "waitlist_units_free")
    assert answer.content_type == "application/problem+json"
    assert data["title"] == "该排班仍有可预约号源，请直接预约"
    _, data, _ = await join(api, http, account, free_schedule, body, language="en")
    assert data["title"].startswith("A unit of this schedule is free")

    status, data, _ = await join(api, http, account, "no-such-schedule", body)
    assert (status, data["code"]) == (404, "not_found")
    status, data, _ = await join(api, http, account, "bad id!", body)
    assert status == 404
    schedule, _, _, _ = await sold_out_schedule(api, http)
    status, data, _ = await join(api, http, uid("other"), schedule, body)
    assert (status, data["code"]) == (404, "not_found")
    status, data, _ = await join(api, http, account, schedule, body, key="")
    assert (status, data["code"]) == (400, "idempotency_key_required")
    status, data, _ = await join(api, http, account, schedule, {"patient_id": patient})
    assert (status, data["code"]) == (422, "validation_failed")
    status, data, _ = await join(api, http, account, schedule, {**body, "channel": "fax"})
    assert (status, data["code"]) == (422, "validation_failed")

    for path in ("/v1/waitlist/nope", "/v1/waitlist/d.20270101.abcdefghijklmnopqrstuvwx"):
        async with http.get(api.url + path, headers=api.headers(account)) as answer:
            assert answer.status == 404
            assert (await answer.json())["code"] == "not_found"

    # The limit (1 here): a second schedule of the same hospital is refused.
    limited_one, limited_slots, _ = await cat.schedule([1], session="afternoon")
    limited_two, more_slots, _ = await cat.schedule([1], session="evening")
    for slot in (limited_slots[0], more_slots[0]):
        other = uid("holder")
        await reserve(api, http, other, await register_patient(api, http, other), slot)
    status, entry, _ = await join(api, http, account, limited_one, body)
    assert status == 201, entry
    status, data, _ = await join(api, http, account, limited_two, body)
    assert (status, data["code"]) == (409, "waitlist_limit")
    _, data, _ = await join(api, http, account, limited_two, body, language="en")
    assert data["title"] == "This patient is on as many waitlists as allowed; leave one first"
    mine = await get(api, http, account, "/v1/waitlist")
    assert isinstance(mine["items"], list)


async def test_a_doctors_day(api_server: ApiServer, http: aiohttp.ClientSession) -> None:
    """A patient joins a doctor's day (both windows sold out): the entry names the day's
    schedules, a retry answers it again, and a unit freed in the afternoon is offered to
    it; an unknown doctor, a malformed date and a day without schedules are 404."""
    api = api_server
    cat = await Catalogue(api, http).create()
    morning, am_slots, day = await cat.schedule([1])
    afternoon, pm_slots, _ = await cat.schedule([1], visit_date=day, session="afternoon")
    holds = []
    for slot in (am_slots[0], pm_slots[0]):
        holder = uid("holder")
        patient = await register_patient(api, http, holder)
        holds.append((holder, (await reserve(api, http, holder, patient, slot))["hold_id"]))
    account = uid("wl")
    patient = await register_patient(api, http, account)
    url = f"{api.url}/v1/doctors/{cat.doctor_id}/days/{day.isoformat()}/waitlist"
    body = {"patient_id": patient, "channel": "app"}
    headers = api.headers(account) | {"Idempotency-Key": "day-1"}
    async with http.post(url, json=body, headers=headers) as answer:
        entry = await answer.json()
        assert answer.status == 201, entry
    assert entry["doctor_id"] == cat.doctor_id
    assert sorted(entry["day_schedule_ids"]) == sorted([morning, afternoon])
    assert (entry["state"], entry["position"]) == ("waiting", 1)
    async with http.post(url, json=body, headers=headers) as answer:
        assert answer.headers["Idempotent-Replayed"] == "true"
        assert (await answer.json())["entry_id"] == entry["entry_id"]

    holder, hold_id = holds[1]
    async with http.delete(
        api.url + f"/v1/holds/{hold_id}",
        headers=api.headers(holder) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        assert answer.status == 200, await answer.text()
    offered = await get(api, http, account, f"/v1/waitlist/{entry['entry_id']}")
    assert offered["state"] == "offered"
    assert offered["schedule_id"] == afternoon
    assert offered["offer"]["slot_id"] == pm_slots[0]

    for path in (
        f"/v1/doctors/{uid('nobody')}/days/{day.isoformat()}/waitlist",
        f"/v1/doctors/{cat.doctor_id}/days/tomorrow/waitlist",
        f"/v1/doctors/{cat.doctor_id}/days/2099-01-01/waitlist",
    ):
        async with http.post(
            api.url + path,
            json=body,
            headers=api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            assert answer.status == 404, path
            assert answer.content_type == "application/problem+json"
