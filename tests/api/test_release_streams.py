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

from inventory.devtools.servers import free_port
from tests.databases import Databases

from .conftest import ApiServer, api_env, running_api, verified_database
from .helpers import Catalogue, register_patient, uid
from .test_releases import _json, queued_schedule, reserve


@pytest.fixture(scope="module")
def narrow_api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API process that admits at most 2 requests in flight."""
    database_url = verified_database(redis_server.url, databases)
    env = api_env(redis_server.url, database_url, free_port())
    env |= {"INVENTORY_MAX_IN_FLIGHT": "2", "INVENTORY_ACCESS_LOG": "false"}
    with running_api(env, tmp_path_factory.mktemp("narrow") / "api.log") as server:
        yield server


async def test_streams_do_not_fill_the_bound_in_flight(
    narrow_api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """Six streams and a long-poll of a release wait at once on a process that admits
    two requests in flight: none is shed (503), other requests are answered meanwhile,
    and the streams end with the admitted patient's hold and the others' sell-out."""
    api = narrow_api
    catalogue = await Catalogue(api, http).create()
    schedule_id, slot_id, _ = await queued_schedule(catalogue, capacity=1)
    async with http.post(
        api.url + "/v1/operator/releases",
        json={"schedule_ids": [schedule_id]},
        headers=api.headers("ops", operator=True),
    ) as answer:
        release_id = (await _json(answer))["release_id"]
        assert answer.status == 201
    patients, tickets = {}, {}
    for _ in range(6):
        account = uid("acct")
        patients[account] = await register_patient(api, http, account)
        async with http.post(
            f"{api.url}/v1/releases/{release_id}/tickets",
            json={"patient_id": patients[account]},
            headers=api.headers(account),
        ) as answer:
            tickets[account] = (await _json(answer))["ticket_id"]
            assert answer.status == 201

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
