"""Release day's waiting room through a real API process on the session's Redis and
Postgres: an operator opens a release, patients join before T0 and follow their tickets
by Server-Sent Events and long-poll, the admitted reserve with their tokens, the rest
learn the sell-out with the waitlist offer; the published seed recomputes the draw; and
every bad input is a problem+json with its own code."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from inventory.release import draw

from .conftest import ApiServer
from .helpers import Catalogue, register_patient, uid

#: Far enough ahead that every join lands before T0 on a loaded machine.
T0_AHEAD_S = 4.0


async def _json(answer: aiohttp.ClientResponse) -> Any:
    return orjson.loads(await answer.read())


async def queued_schedule(catalogue: Catalogue, capacity: int) -> tuple[str, str, datetime]:
    """A schedule with one slot, released T0_AHEAD_S from now: (schedule, slot, T0)."""
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    start = datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)
    t0 = (datetime.now(tz=UTC) + timedelta(seconds=T0_AHEAD_S)).replace(microsecond=0)
    schedule_id, slot_id = uid("s"), uid("sl")
    await catalogue.put(
        f"/v1/operator/schedules/{schedule_id}",
        {
            "hospital_id": catalogue.hospital_id,
            "department_id": catalogue.department_id,
            "doctor_id": catalogue.doctor_id,
            "visit_date": day.isoformat(),
            "session": "morning",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=4)).isoformat(),
            "release_at": t0.isoformat(),
            "cancel_deadline": (start - timedelta(hours=12)).isoformat(),
            "fee_fen": 0,
            "location": "Building 2",
            "slots": [
                {
                    "slot_id": slot_id,
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(minutes=30)).isoformat(),
                    "capacity": capacity,
                }
            ],
        },
    )
    return schedule_id, slot_id, t0


async def stream(
    http: aiohttp.ClientSession, api: ApiServer, account: str, release_id: str, ticket: str
) -> list[dict[str, Any]]:
    """Every status event of a ticket's stream, until the server ends it."""
    url = f"{api.url}/v1/releases/{release_id}/tickets/{ticket}/events"
    seen: list[dict[str, Any]] = []
    async with http.get(url, headers=api.headers(account)) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        async for line in answer.content:
            if line.startswith(b"data: "):
                seen.append(orjson.loads(line[6:]))
    return seen


async def reserve(
    http: aiohttp.ClientSession,
    api: ApiServer,
    account: str,
    patient: str,
    slot: str,
    token: str | None = None,
) -> tuple[int, Any]:
    body: dict[str, Any] = {"slot_id": slot, "patient_id": patient, "channel": "app"}
    if token is not None:
        body["admission_token"] = token
    headers = api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex}
    async with http.post(api.url + "/v1/holds", json=body, headers=headers) as answer:
        return answer.status, await _json(answer)


async def test_a_release_day_through_the_api(
    api_server: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Three patients join a release of two units before T0; at T0 two are admitted in the
    drawn order and reserve with their tokens, the third learns the sell-out with the
    waitlist offer; the revealed seed recomputes the order; tokens are refused when
    forged, used or another account's; joining twice answers the same ticket, joining
    after the sell-out is room_sold_out; unknown releases and tickets are 404."""
    api = api_server
    catalogue = await Catalogue(api, http).create()
    schedule_id, slot_id, t0 = await queued_schedule(catalogue, capacity=2)
    op = api.headers("ops", operator=True)
    async with http.post(
        api.url + "/v1/operator/releases", json={"schedule_ids": [schedule_id]}, headers=op
    ) as answer:
        opened = await _json(answer)
        assert answer.status == 201, opened
    release_id = opened["release_id"]
    assert opened["state"] == "open"
    assert opened["seed"] is None
    async with http.post(
        api.url + "/v1/operator/releases", json={"schedule_ids": [schedule_id]}, headers=op
    ) as again:
        assert again.status == 200
        assert (await _json(again))["seed_hash"] == opened["seed_hash"]

    patients: dict[str, str] = {}
    tickets: dict[str, str] = {}
    for i in range(3):
        account = uid("acct")
        patients[account] = await register_patient(api, http, account)
        url = f"{api.url}/v1/releases/{release_id}/tickets"
        body = {"patient_id": patients[account]}
        async with http.post(url, json=body, headers=api.headers(account)) as answer:
            joined = await _json(answer)
            assert answer.status == 201, joined
        assert joined["outcome"] == "waiting"
        assert joined["position"] is None
        tickets[account] = joined["ticket_id"]
        if i == 0:
            async with http.post(url, json=body, headers=api.headers(account)) as twice:
                assert twice.status == 200
                assert (await _json(twice))["ticket_id"] == joined["ticket_id"]
    assert datetime.now(tz=UTC) < t0, "the joins took longer than the test allows"

    # Each patient follows their ticket's stream; the admitted reserve at once with their
    # token (the first also tries it as another account, and again once used).
    lock = asyncio.Lock()
    checked: list[str] = []

    async def patient(account: str) -> dict[str, Any]:
        seen = await stream(http, api, account, release_id, tickets[account])
        view = seen[-1]
        if view["outcome"] != "admitted":
            return view
        token = view["admission_token"]
        async with lock:
            if not checked:
                checked.append(account)
                other = next(a for a in tickets if a != account)
                status, body = await reserve(http, api, other, patients[other], slot_id, token)
                assert (status, body["code"]) == (403, "admission_token_not_yours")
        status, body = await reserve(http, api, account, patients[account], slot_id, token)
        assert status == 201, body
        if checked == [account]:
            status, body = await reserve(http, api, account, patients[account], slot_id, token)
            assert (status, body["code"]) == (409, "admission_token_used")
        return view

    last = dict(zip(tickets, await asyncio.gather(*map(patient, tickets)), strict=True))
    admitted = [a for a, view in last.items() if view["outcome"] == "admitted"]
    assert len(admitted) == 2, last
    (waiting,) = [a for a in tickets if a not in admitted]
    assert sorted(last[a]["position"] for a in admitted) == [1, 2]
    view = last[waiting]
    assert view["outcome"] == "sold_out", view
    assert view["position"] == 3
    assert view["waitlist"] == {"available": True, "schedule_ids": [schedule_id]}

    # The room is closed: a reserve needs no token (and finds the slot full); a forged
    # token on an open room is tried in the script tests.
    status, body = await reserve(http, api, waiting, patients[waiting], slot_id)
    assert (status, body["code"]) == (409, "sold_out")
    url = f"{api.url}/v1/releases/{release_id}/tickets/{tickets[waiting]}"
    async with http.get(
        url, params={"wait_s": "1", "after": view["version"]}, headers=api.headers(waiting)
    ) as polled:
        assert polled.status == 200
        assert (await _json(polled))["outcome"] == "sold_out"

    # Joining now: sold out, with the waitlist offer.
    late = uid("acct")
    late_patient = await register_patient(api, http, late)
    async with http.post(
        f"{api.url}/v1/releases/{release_id}/tickets",
        json={"patient_id": late_patient},
        headers=api.headers(late),
    ) as answer:
        body = await _json(answer)
        assert (answer.status, body["code"]) == (409, "room_sold_out")
        assert body["waitlist"] == {"available": True, "schedule_ids": [schedule_id]}

    # The public view reveals the seed; it matches the hash and recomputes the order.
    async with http.get(f"{api.url}/v1/releases/{release_id}") as answer:
        public = await _json(answer)
    assert public["state"] == "sold_out"
    assert draw.seed_hash(public["seed"]) == opened["seed_hash"]
    async with http.get(
        f"{api.url}/v1/operator/releases/{release_id}/fairness", headers=op
    ) as answer:
        report = await _json(answer)
        assert answer.status == 200, report
    assert report["verified"] is True
    by_position = sorted(
        tickets.values(), key=lambda t: {v["ticket_id"]: v["position"] for v in last.values()}[t]
    )
    assert report["tickets"] == by_position == draw.draw_order(public["seed"], tickets.values())
    async with http.get(f"{api.url}/v1/operator/releases/{release_id}", headers=op) as answer:
        live = await _json(answer)
        assert answer.status == 200, live
    assert (live["used"], live["held"], live["remaining"], live["waitlisted"]) == (2, 2, 0, 0)
    # The patient told "sold out" takes the waitlist offer: the live view counts it.
    async with http.post(
        f"{api.url}/v1/schedules/{schedule_id}/waitlist",
        json={"patient_id": patients[waiting], "channel": "app"},
        headers=api.headers(waiting) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        assert answer.status == 201, await answer.text()
    async with http.get(f"{api.url}/v1/operator/releases/{release_id}", headers=op) as answer:
        assert (await _json(answer))["waitlisted"] == 1

    # Unknown releases and tickets.
    unknown = f"{catalogue.department_id}.20991231.nope"
    for path in (f"/v1/releases/{unknown}", "/v1/releases/not-a-release"):
        async with http.get(api.url + path) as answer:
            assert answer.status == 404
            assert answer.headers["Content-Type"].startswith("application/problem+json")
    async with http.get(
        f"{api.url}/v1/releases/{release_id}/tickets/{'a' * 24}", headers=api.headers(waiting)
    ) as answer:
        assert answer.status == 404
    async with http.get(
        f"{api.url}/v1/releases/{release_id}/tickets/{tickets[admitted[0]]}",
        headers=api.headers(waiting),
    ) as answer:
        assert answer.status == 404
    # The waiting ticket was read by this process (its answer now follows from the
    # release's fields, without Redis): still its own account's only.
    async with http.get(
        f"{api.url}/v1/releases/{release_id}/tickets/{tickets[waiting]}",
        headers=api.headers(admitted[0]),
    ) as answer:
        assert answer.status == 404
