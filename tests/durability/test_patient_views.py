"""Patient views that read what the worker records, through the whole stack (API and
worker): GET /v1/holds (a patient's holds still waiting for payment reach the list once
the persister has recorded them, and leave it the moment the store says they ended,
whether or not the record has caught up), and the catalogue's views naming a queued
schedule's waiting room."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp
import pytest

from inventory.devtools.servers import RedisServer
from tests.api.helpers import Catalogue
from tests.api.test_releases import queued_schedule

from .stack import (
    Stack,
    catalogue,
    patients,
    reserve,
    wait_ready,
    wait_until,
    wait_verified,
)

pytestmark = pytest.mark.slow


async def open_holds(
    stack: Stack, http: aiohttp.ClientSession, account: str, query: str = ""
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        stack.api.url + "/v1/holds" + query, headers=stack.api.headers(account)
    ) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_open_holds_list_what_is_still_to_pay(
    stack: Stack, private_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    stack.start_worker()
    await wait_verified(private_redis.url)
    await wait_ready(stack, http)
    (owner, patient), (other, other_patient) = await patients(stack, http, 2)
    slot = await catalogue(stack, http, 3)
    status, hold = await reserve(stack, http, owner, patient, slot)
    assert status == 201, hold
    status, theirs = await reserve(stack, http, other, other_patient, slot)
    assert status == 201, theirs

    async def listed() -> bool:
        _, mine = await open_holds(stack, http, owner)
        return [h["hold_id"] for h in mine["items"]] == [hold["hold_id"]]

    await wait_until(listed, timeout_s=15)
    _, mine = await open_holds(stack, http, owner)
    assert mine["items"][0] == {**hold, "cancellable": mine["items"][0]["cancellable"]}

    # Given back: gone at once (the store's word), though the record may still say held.
    async with http.delete(
        stack.api.url + f"/v1/holds/{hold['hold_id']}", headers=stack.api.headers(owner)
    ) as answer:
        assert answer.status == 200, await answer.text()
    status, mine = await open_holds(stack, http, owner)
    assert (status, mine["items"]) == (200, [])

    # The other account's hold is theirs alone.
    async def listed_for_other() -> bool:
        _, found = await open_holds(stack, http, other)
        return [h["hold_id"] for h in found["items"]] == [theirs["hold_id"]]

    await wait_until(listed_for_other, timeout_s=15)

    status, problem = await open_holds(stack, http, owner, "?limit=0")
    assert (status, problem["code"]) == (422, "validation_failed")
    async with http.get(stack.api.url + "/v1/holds") as answer:
        assert answer.status == 401


async def test_schedule_views_name_the_waiting_room(
    stack: Stack, private_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Once an operator opens a release's room, the department's day and the schedule's
    windows name it (release id, opening, T0), so a patient can join before T0; a
    schedule without a room says so with null."""
    stack.start_worker()
    await wait_verified(private_redis.url)
    await wait_ready(stack, http)
    shop = await Catalogue(stack.api, http).create()
    schedule_id, _, t0 = await queued_schedule(shop, capacity=2)
    plain_id, _, visit = await shop.schedule([1], session="afternoon")
    async with http.post(
        stack.api.url + "/v1/operator/releases",
        json={"schedule_ids": [schedule_id]},
        headers=stack.api.headers("ops", operator=True),
    ) as answer:
        opened = await answer.json()
        assert answer.status == 201, opened

    async def day_view() -> dict[str, Any]:
        async with http.get(
            stack.api.url + f"/v1/departments/{shop.department_id}/schedules",
            params={"date": visit.isoformat()},
        ) as answer:
            assert answer.status == 200
            return {item["schedule_id"]: item for item in (await answer.json())["items"]}

    async def named() -> bool:
        return (await day_view())[schedule_id]["waiting_room"] is not None

    await wait_until(named, timeout_s=15)
    items = await day_view()
    room = items[schedule_id]["waiting_room"]
    assert room["release_id"] == opened["release_id"]
    assert room["t0"] == opened["t0"]
    assert room["opens_at"] == opened["opens_at"]
    assert items[plain_id]["waiting_room"] is None
    async with http.get(stack.api.url + f"/v1/schedules/{schedule_id}/slots") as answer:
        windows = await answer.json()
    assert windows["waiting_room"] == room
    assert datetime.fromisoformat(room["t0"]) == t0
