"""Status streams and long-polls wait outside the API's bound on requests in flight:
with room for two requests at once, six patients follow their tickets at the same
time and every other request is still served."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.databases import Databases

from .conftest import ApiServer, configured_api
from .helpers import Catalogue, register_patient, uid
from .test_releases import _json, queued_schedule, reserve


@pytest.fixture(scope="module")
def narrow_api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API process that admits at most 2 requests in flight."""
    settings = {"INVENTORY_MAX_IN_FLIGHT": "2", "INVENTORY_ACCESS_LOG": "false"}
    folder = tmp_path_factory.mktemp("narrow")
    with configured_api(redis_server.url, databases, folder, settings) as server:
        yield server


async def _queued_release(
    api: ApiServer, http: aiohttp.ClientSession, patients: int
) -> tuple[str, str, list[tuple[str, str, str]]]:
    """A release of one schedule of one unit, opened, and ``patients`` new accounts'
    patients joined before T0: (release, slot, [(account, patient, ticket)])."""
    catalogue = await Catalogue(api, http).create()
    schedule_id, slot_id, _ = await queued_schedule(catalogue, capacity=1)
    async with http.post(
        api.url + "/v1/operator/releases",
        json={"schedule_ids": [schedule_id]},
        headers=api.headers("ops", operator=True),
    ) as answer:
        assert answer.status == 201
        release_id = (await _json(answer))["release_id"]
    joined = []
    for _ in range(patients):
        account = uid("acct")
        patient = await register_patient(api, http, account)
        async with http.post(
            f"{api.url}/v1/releases/{release_id}/tickets",
            json={"patient_id": patient},
            headers=api.headers(account),
        ) as answer:
            assert answer.status == 201
            joined.append((account, patient, (await _json(answer))["ticket_id"]))
    return release_id, slot_id, joined


async def test_streams_do_not_fill_the_bound_in_flight(
    narrow_api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Six streams and a long-poll of a release wait at once on a process that admits
    two requests in flight: none is shed (503), other requests are answered meanwhile,
    and the streams end with the admitted patient's hold and the others' sell-out."""
    api = narrow_api
    release_id, slot_id, joined = await _queued_release(api, http, 6)
    patients = {account: patient for account, patient, _ in joined}
    tickets = {account: ticket for account, _, ticket in joined}

    async def first_event(account: str) -> aiohttp.ClientResponse:
        """Open the ticket's stream and read its first event (one at a time: the
        streams' first answers are work in flight, their waiting is not)."""
        answer = await http.get(
            f"{api.url}/v1/releases/{release_id}/tickets/{tickets[account]}/events",
            headers=api.headers(account),
        )
        assert answer.status == 200
        async for line in answer.content:
            if line.startswith(b"data: "):
                break
        return answer

    async def patient(account: str, answer: aiohttp.ClientResponse) -> str:
        view: dict[str, Any] = {}
        async for line in answer.content:
            if line.startswith(b"data: "):
                view = orjson.loads(line[6:])
        answer.release()
        if view["outcome"] == "admitted":
            status, _ = await reserve(
                http, api, account, patients[account], slot_id, view["admission_token"]
            )
            assert status == 201
            return "held"
        return str(view["outcome"])

    followers = [asyncio.create_task(patient(a, await first_event(a))) for a in tickets]
    poller = next(iter(tickets))

    async def long_poll() -> tuple[int, Any]:
        async with http.get(
            f"{api.url}/v1/releases/{release_id}/tickets/{tickets[poller]}",
            params={"wait_s": "20", "after": "waiting.0"},
            headers=api.headers(poller),
        ) as answer:
            return answer.status, await _json(answer)

    polled = asyncio.create_task(long_poll())
    await asyncio.sleep(1.0)  # every stream and the long-poll are waiting now
    assert not any(f.done() for f in followers)
    for _ in range(3):
        async with http.get(f"{api.url}/v1/releases/{release_id}") as answer:
            assert answer.status == 200
    outcomes = sorted(await asyncio.gather(*followers))
    assert outcomes == ["held", "sold_out", "sold_out", "sold_out", "sold_out", "sold_out"]
    status, view = await polled
    assert status == 200, view
    assert view["version"] != "waiting.0"  # it answered a change (the draw placed it)
    # The sell-out's pass answered and closed the waiting streams; their handlers
    # then ended without a write to a closed connection being taken for a failure.
    assert "request.failed" not in api.log_path.read_text(encoding="utf-8")


async def test_a_stream_whose_client_left_ends_quietly(
    narrow_api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Two patients close their streams (a front end does once it has its answer, or
    the patient leaves); the draw's places and the sell-out then find their
    connections gone. That is no failure: nothing is logged as a failed request (it
    was, with its traceback, once per stream: at a sell-out thousands of times in the
    second that matters), and the process goes on serving."""
    api = narrow_api
    release_id, slot_id, joined = await _queued_release(api, http, 3)
    before = api.log_path.read_text(encoding="utf-8").count("request.failed")
    streams: list[aiohttp.ClientResponse] = []
    for account, _, ticket in joined:
        answer = await http.get(
            f"{api.url}/v1/releases/{release_id}/tickets/{ticket}/events",
            headers=api.headers(account),
        )
        async for line in answer.content:
            if line.startswith(b"data: "):
                break
        streams.append(answer)
    # Each patient leaves; the one admitted at the draw comes back to reserve.
    for answer in streams:
        answer.close()
    admitted = None
    for _ in range(100):
        for account, patient, ticket in joined:
            async with http.get(
                f"{api.url}/v1/releases/{release_id}/tickets/{ticket}",
                headers=api.headers(account),
            ) as answer:
                view = await _json(answer)
            if view["outcome"] == "admitted":
                admitted = (account, patient, view["admission_token"])
        if admitted:
            break
        await asyncio.sleep(0.1)
    assert admitted is not None, "nobody was admitted within 10 s of joining"
    status, _ = await reserve(http, api, admitted[0], admitted[1], slot_id, admitted[2])
    assert status == 201
    for _ in range(50):
        async with http.get(f"{api.url}/v1/releases/{release_id}") as answer:
            if (await _json(answer))["state"] == "sold_out":
                break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the watcher's next read wakes the streams that left
    log = api.log_path.read_text(encoding="utf-8")
    assert log.count("request.failed") == before, log[-3000:]
    async with http.get(f"{api.url}/v1/releases/{release_id}") as answer:
        assert answer.status == 200
