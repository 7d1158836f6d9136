"""Release day under process death: the worker and then the API process are SIGKILLed
around T0, while the room draws and admits; a new API process (and worker) take over.
Because every room step is driven by the time passed in and any process may run it,
no admission is lost that would stall the queue: every patient ends with a hold or
"sold out", nothing is sold twice, and no unit is held beyond the capacity."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from inventory.store import keys
from inventory.store.connection import connect_redis
from tests.api.conftest import start_api
from tests.api.helpers import Catalogue
from tests.api.test_releases import queued_schedule

from .stack import Stack, open_stack, patients, wait_ready, wait_until

pytestmark = pytest.mark.slow

CAPACITY = 10
PATIENTS = 40
#: Every patient must have a final answer within this long after T0.
ANSWERED_WITHIN_S = 90.0


@dataclass
class RoomStack:
    """The API and the worker on one Redis or on a 3-master Cluster."""

    stack: Stack
    #: What a client of the test connects to (a start-up node of the Cluster).
    redis_url: str
    cluster: bool


@pytest.fixture(params=["redis", "cluster"])
def room_stack(
    request: pytest.FixtureRequest, database: str, tmp_path: Path
) -> Iterator[RoomStack]:
    """The API and the worker on the test's private Redis, or on the session's Cluster
    (every node a start-up node, so a process restarted later still finds it)."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        nodes = ",".join(node.url for node in cluster.all_nodes)
        running = open_stack(
            nodes, database, tmp_path, extra_env={"INVENTORY_REDIS_CLUSTER": "true"}
        )
        found = RoomStack(running, cluster.url, cluster=True)
    else:
        private_redis = request.getfixturevalue("private_redis")
        running = open_stack(private_redis.url, database, tmp_path)
        found = RoomStack(running, private_redis.url, cluster=False)
    try:
        running.start_worker()
        yield found
    finally:
        running.close()


def _kill(process: Any) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


async def _follow(
    stack: Stack,
    http: aiohttp.ClientSession,
    release_id: str,
    account: str,
    patient: str,
    slot: str,
) -> str:
    """A patient's client: join, long-poll until admitted or final, reserve with the
    token; every request retried while no API answers. Its final answer."""
    headers = stack.api.headers(account)
    key = uuid.uuid4().hex
    view: dict[str, Any] | None = None
    deadline = time.monotonic() + ANSWERED_WITHIN_S + 30
    while time.monotonic() < deadline:
        try:
            if view is None:
                async with http.post(
                    f"{stack.api.url}/v1/releases/{release_id}/tickets",
                    json={"patient_id": patient},
                    headers=headers,
                ) as answer:
                    if answer.status >= 500:
                        await asyncio.sleep(0.2)
                        continue
                    body = orjson.loads(await answer.read())
                    if answer.status == 409 and body["code"] == "room_sold_out":
                        return "sold_out"
                    assert answer.status in (200, 201), body
                    view = body
            else:
                async with http.get(
                    f"{stack.api.url}/v1/releases/{release_id}/tickets/{view['ticket_id']}",
                    params={"wait_s": "2", "after": view["version"]},
                    headers=headers,
                ) as answer:
                    if answer.status >= 500:
                        await asyncio.sleep(0.2)
                        continue
                    view = orjson.loads(await answer.read())
                    assert answer.status == 200, view
            assert view is not None
            if view["outcome"] in ("sold_out", "expired"):
                return str(view["outcome"])
            if view["outcome"] == "admitted":
                async with http.post(
                    stack.api.url + "/v1/holds",
                    json={
                        "slot_id": slot,
                        "patient_id": patient,
                        "channel": "app",
                        "admission_token": view["admission_token"],
                    },
                    headers=headers | {"Idempotency-Key": key},
                ) as answer:
                    if answer.status >= 500:
                        await asyncio.sleep(0.2)
                        continue
                    body = orjson.loads(await answer.read())
                    if answer.status == 201:
                        return "held"
                    assert body["code"] == "sold_out", body
                    return "sold_out"
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(0.2)  # no API process answers: try again
    return "no answer"


@pytest.mark.timeout(300)
async def test_kill_9_of_the_worker_and_the_api_during_admission(
    room_stack: RoomStack, database: str
) -> None:
    """Worker SIGKILLed just before T0, the API SIGKILLed just after it; a new API
    process and worker start a second later: every patient has a final answer, exactly
    CAPACITY hold a unit, the rest are sold out, Redis holds no more than CAPACITY, and
    Postgres records the release and every ticket with the holds made. On one Redis and
    on a 3-master Cluster."""
    stack = room_stack.stack
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await wait_ready(stack, http)
        people = await patients(stack, http, PATIENTS)
        shop = await Catalogue(stack.api, http).create()
        schedule_id, slot_id, t0 = await queued_schedule(shop, capacity=CAPACITY)
        async with http.post(
            stack.api.url + "/v1/operator/releases",
            json={"schedule_ids": [schedule_id]},
            headers=stack.api.headers("ops", operator=True),
        ) as answer:
            assert answer.status == 201
            release_id = (await answer.json())["release_id"]

        async def kill_and_restart() -> None:
            await asyncio.sleep(max(0.0, t0.timestamp() - time.time() - 0.3))
            assert stack.worker is not None
            _kill(stack.worker)
            await asyncio.sleep(max(0.0, t0.timestamp() - time.time() + 0.3))
            _kill(stack.api.process)
            await asyncio.sleep(1.0)
            stack.api.process = await asyncio.to_thread(
                start_api, stack.api.env, stack.api.log_path
            )
            stack.start_worker()

        killer = asyncio.create_task(kill_and_restart())
        answers = await asyncio.gather(
            *(_follow(stack, http, release_id, a, p, slot_id) for a, p in people)
        )
        await killer
    assert sorted(set(answers)) in (["held", "sold_out"], ["held"]), answers
    assert answers.count("held") == min(CAPACITY, PATIENTS)
    client = await connect_redis(room_stack.redis_url, cluster=room_stack.cluster)
    try:
        tag = keys.tag_of_release(release_id)
        counts = await client.hmget(
            keys.tag_keys(tag).slots, [f"{slot_id}:held", f"{slot_id}:rem", f"{slot_id}:cap"]
        )
    finally:
        await client.aclose()
    held, remaining, capacity = (int(v) for v in counts)
    assert (held, remaining, capacity) == (CAPACITY, 0, CAPACITY)

    # The record: Postgres has the release (its seed revealed, sold out) and every
    # ticket, the CAPACITY that reserved with the holds they made.
    async def recorded() -> bool:
        connection = await asyncpg.connect(database)
        try:
            release = await connection.fetchrow(
                "SELECT seed, sold_out_at FROM room_releases WHERE release_id = $1", release_id
            )
            rows = await connection.fetch(
                "SELECT outcome, hold_id FROM room_tickets WHERE release_id = $1", release_id
            )
        finally:
            await connection.close()
        reserved = [r for r in rows if r["outcome"] == "reserved" and r["hold_id"]]
        return bool(
            release is not None
            and release["seed"]
            and release["sold_out_at"] is not None
            and len(rows) == PATIENTS
            and len(reserved) == CAPACITY
        )

    await wait_until(recorded, timeout_s=60)
