"""The sold-out fast path (inventory/booking/soldout.py) through a real API process on the
session's Redis and Postgres: a slot the process saw sold out is refused for the
availability cache's lifetime without the reserve script or Postgres, a retried reserve
that took a unit still gets its hold back, a slot with units (held or waiting ones
included) is never refused from memory, and once the lifetime is over the store is
asked again.

The fast path is seen from outside by what it skips: a reserve for a patient id that
does not exist answers 404 when the request reaches Postgres, and 409 ``sold_out``
when it is refused from memory first."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from inventory.store.slot_store import SlotStore
from tests.databases import Databases

from .conftest import ApiServer, configured_api
from .helpers import Catalogue, register_patient, uid

#: Long enough that "within the lifetime" holds on a loaded machine.
MEMORY_S = 3.0


@pytest.fixture(scope="module")
def api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """An API process that caches availability (and remembers sold-out slots) 3 s."""
    settings = {"INVENTORY_AVAILABILITY_CACHE_S": str(MEMORY_S)}
    folder = tmp_path_factory.mktemp("sold-out")
    with configured_api(redis_server.url, databases, folder, settings) as server:
        yield server


async def _reserve(
    http: aiohttp.ClientSession,
    api: ApiServer,
    slot_id: str,
    *,
    account: str | None = None,
    patient_id: str = "p-none",
    key: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = api.headers(account or uid("acct")) | {"Idempotency-Key": key or uuid.uuid4().hex}
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": slot_id, "patient_id": patient_id, "channel": "app"},
        headers=headers,
    ) as answer:
        return answer.status, await answer.json(content_type=None)


async def _holder(
    api: ApiServer, http: aiohttp.ClientSession, slot_id: str
) -> tuple[str, str, dict[str, Any]]:
    """A real patient takes a unit of ``slot_id``: (account, key, hold)."""
    account, key = uid("acct"), uuid.uuid4().hex
    patient_id = await register_patient(api, http, account)
    status, hold = await _reserve(
        http, api, slot_id, account=account, patient_id=patient_id, key=key
    )
    assert status == 201, hold
    return account, key, hold


async def _release_elsewhere(redis_url: str, hold_id: str, account: str) -> None:
    """Release a hold as another API process would: straight through the store."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        store = await SlotStore.connect_scripts(client)
        await store.release(hold_id, account_id=account, reason="patient_released")
    finally:
        await client.aclose()


async def test_a_refused_slot_is_refused_from_memory_then_asked_again(
    api: ApiServer, http: aiohttp.ClientSession, redis_server: Any
) -> None:
    """After the store's sold_out, the process answers sold_out by itself (Postgres is
    not asked: a missing patient gets 409, not 404); the patient who took the unit
    retries with their key and gets their hold; the unit released by another process,
    the slot is reserved again once the memory's lifetime is over."""
    cat = await Catalogue(api, http).create()
    _, (slot_id,), _ = await cat.schedule([1])
    account, key, hold = await _holder(api, http, slot_id)
    assert (await _reserve(http, api, slot_id))[0] == 404  # Postgres asked: no such patient
    # The store's refusal for a patient of the caller: remembered.
    account_b = uid("acct")
    patient_b = await register_patient(api, http, account_b)
    started = time.monotonic()
    status, body = await _reserve(http, api, slot_id, account=account_b, patient_id=patient_b)
    assert (status, body["code"]) == (409, "sold_out"), body
    status, body = await _reserve(http, api, slot_id)
    assert (status, body["code"]) == (409, "sold_out"), body  # from memory: no 404
    status, replay = await _reserve(
        http, api, slot_id, account=account, key=key, patient_id=hold["patient_id"]
    )
    assert status == 201, replay
    assert replay["hold_id"] == hold["hold_id"]
    assert time.monotonic() - started < MEMORY_S, "the machine was too slow for this test"

    await _release_elsewhere(redis_server.url, hold["hold_id"], account)
    await asyncio.sleep(max(0.0, started + MEMORY_S + 0.2 - time.monotonic()))
    status, again = await _reserve(http, api, slot_id, account=account_b, patient_id=patient_b)
    assert status == 201, again


async def test_a_release_through_this_process_is_seen_at_once(
    api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """A hold released (or a booking cancelled) through this process makes it forget the
    slot at once: the next reserve gets the unit without waiting out the memory."""
    cat = await Catalogue(api, http).create()
    _, (slot_id,), _ = await cat.schedule([1])
    account, _, hold = await _holder(api, http, slot_id)
    account_b = uid("acct")
    patient_b = await register_patient(api, http, account_b)
    started = time.monotonic()
    status, body = await _reserve(http, api, slot_id, account=account_b, patient_id=patient_b)
    assert (status, body["code"]) == (409, "sold_out"), body
    async with http.delete(
        api.url + f"/v1/holds/{hold['hold_id']}", headers=api.headers(account)
    ) as answer:
        assert answer.status == 200
    status, again = await _reserve(http, api, slot_id, account=account_b, patient_id=patient_b)
    assert status == 201, again
    assert time.monotonic() - started < MEMORY_S, "the machine was too slow for this test"


async def test_availability_teaches_only_slots_fully_booked(
    api: ApiServer, http: aiohttp.ClientSession
) -> None:
    """An availability read that finds a slot fully booked makes the process refuse it
    from memory; a slot whose last unit is only held is not refused from memory (the
    hold may expire), nor one with units left."""
    cat = await Catalogue(api, http).create()
    schedule_id, (booked, held, free), _ = await cat.schedule([1, 1, 2])
    account, _, hold = await _holder(api, http, booked)
    async with http.post(
        api.url + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": "wx-" + uuid.uuid4().hex[:8]},
        headers=api.headers(account),
    ) as answer:
        assert answer.status == 200, await answer.text()
    await _holder(api, http, held)
    async with http.get(api.url + f"/v1/schedules/{schedule_id}/slots") as answer:
        view = await answer.json()
    assert [s["remaining"] for s in view["items"]] == [0, 0, 2]
    status, body = await _reserve(http, api, booked)
    assert (status, body["code"]) == (409, "sold_out"), body
    assert (await _reserve(http, api, held))[0] == 404  # asked Postgres, then the store
    assert (await _reserve(http, api, free))[0] == 404
