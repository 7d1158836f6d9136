"""The worker's sampler against a real Redis: a fenced department-day makes its /readyz
answer 503 with the fence named, and it is ready again once nothing is fenced."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from inventory.devtools.servers import RedisServer, free_port
from inventory.ops.sampler import run_sampler

from .conftest import ManualClock, Scenario, make_store


async def _ready(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as answer:
        return answer.status, await answer.json()


async def test_a_fenced_tag_makes_the_worker_unready(
    private_redis: RedisServer, clock: ManualClock
) -> None:
    """On a Redis of this test's own: the sampler counts every fenced tag of its server, so
    a tag another test left fenced on a shared one would make it unready from the start."""
    client = Redis.from_url(private_redis.url, decode_responses=True)
    scenario = Scenario(store=await make_store(client, clock), clock=clock, client=client)
    spec = scenario.schedule({"slot-a": 2})
    await scenario.store.load_schedule(spec)
    port = free_port()
    stop = asyncio.Event()
    sampler = asyncio.create_task(
        run_sampler(
            scenario.store, stats=None, stop=stop, max_backlog=10, port=port, interval_s=0.1
        )
    )
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    status, body = await _ready(http, url)
                    if status == 200:
                        break
                await asyncio.sleep(0.05)
            assert (status, body["checks"]["fence"]) == (200, "ok"), body
            fenced, _ = await scenario.store.fence_if_behind(scenario.tag, 10**6)
            assert fenced
            for _ in range(100):
                status, body = await _ready(http, url)
                if status == 503:
                    break
                await asyncio.sleep(0.05)
            assert status == 503, body
            assert body["checks"]["fence"].startswith("fenced: "), body
            assert body["checks"]["redis"] == "ok"
    finally:
        stop.set()
        await sampler
        await client.aclose()


async def test_readiness_right_after_start_gives_an_age_not_a_clock(scenario: Scenario) -> None:
    """Before its first good sample (here: Redis unreachable) the worker's /readyz says
    how long since start, not the host's monotonic clock as an "age"."""
    from redis.asyncio import Redis

    from inventory.store.slot_store import SlotStore

    if isinstance(scenario.client, RedisCluster):
        pytest.skip("the worker's sampler is exercised on a single server here")
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    store = SlotStore(dead, scenario.store.scripts)
    port = free_port()
    stop = asyncio.Event()
    sampler = asyncio.create_task(
        run_sampler(store, stats=None, stop=stop, max_backlog=10, port=port, interval_s=0.1)
    )
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    status, body = await _ready(http, url)
                    if "Error" in body["checks"]["redis"]:
                        break
                await asyncio.sleep(0.05)
        assert status == 503, body
        redis_check = body["checks"]["redis"]
        assert redis_check.startswith("failing: no store sample yet, "), redis_check
        seconds = int(redis_check.split(", ", 1)[1].split(" s after start", 1)[0])
        assert 0 <= seconds < 30, redis_check
    finally:
        stop.set()
        await sampler
        await dead.aclose()
