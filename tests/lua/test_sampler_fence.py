"""The worker's sampler against a real Redis: a fenced department-day makes its /readyz
answer 503 with the fence named, and it is ready again once nothing is fenced."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from redis.asyncio.cluster import RedisCluster

from inventory import keys
from inventory.sampler import run_sampler
from inventory.servers import free_port

from .conftest import Scenario


async def _ready(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as answer:
        return answer.status, await answer.json()


async def test_a_fenced_tag_makes_the_worker_unready(scenario: Scenario) -> None:
    if isinstance(scenario.client, RedisCluster):
        pytest.skip("the worker's sampler is exercised on a single server here")
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
        # The server is shared by the session: leave no fenced tag for other samplers.
        await scenario.client.srem(keys.TAG_REGISTRY_KEY, scenario.tag)
        await scenario.client.delete(*scenario.tag_keys.as_list())
