"""The API's /readyz through a real HTTP client: with the outbox backlog past
``INVENTORY_READY_MAX_OUTBOX_BACKLOG`` it answers 503 and says how far behind the outbox
is; once the persister has caught up, 200 again."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer, free_port
from inventory.record.persister import Persister, PersisterConfig
from inventory.record.pool import create_pool
from inventory.store.backlog import registered_streams

from .conftest import ApiServer, api_env, launch_api, mark_store_verified, stop_api
from .helpers import Catalogue

#: The bound the test server runs with: three schedules pass it.
BOUND = 2


@pytest.fixture
async def bounded_api(
    private_redis: RedisServer, database: str, tmp_path: Path
) -> AsyncIterator[ApiServer]:
    """An API process on a Redis of this test's own (the backlog it measures is this
    test's alone) and a database of its own, with the backlog bound at 2."""
    await mark_store_verified(private_redis.url, database)
    env = api_env(private_redis.url, database, free_port())
    env["INVENTORY_READY_MAX_OUTBOX_BACKLOG"] = str(BOUND)
    server = await asyncio.to_thread(launch_api, env, tmp_path / "api.log")
    try:
        yield server
    finally:
        await asyncio.to_thread(stop_api, server.process)


async def _readyz(http: aiohttp.ClientSession, api: ApiServer) -> tuple[int, dict[str, Any]]:
    async with http.get(api.url + "/readyz") as answer:
        return answer.status, await answer.json()


async def _until(
    http: aiohttp.ClientSession, api: ApiServer, status: int
) -> tuple[int, dict[str, Any]]:
    """Poll /readyz until it answers ``status`` (the API re-measures every 2 s)."""
    found = await _readyz(http, api)
    for _ in range(50):
        if found[0] == status:
            break
        await asyncio.sleep(0.1)
        found = await _readyz(http, api)
    return found


async def test_readyz_fails_with_the_backlog_past_its_bound_and_recovers(
    bounded_api: ApiServer, private_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Nothing waiting: 200 with every check ok. Three schedules' outbox entries past
    the bound of 2: 503 naming the entries waiting, the oldest's age and the bound, the other
    checks still ok. After the persister drains the outbox: 200 again."""
    status, body = await _readyz(http, bounded_api)
    assert (status, body) == (
        200,
        {
            "status": "ready",
            "checks": {"redis": "ok", "postgres": "ok", "outbox": "ok", "store": "ok"},
        },
    )

    catalogue = await Catalogue(bounded_api, http).create()
    first = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    for day in range(3):  # three tags, one schedule_loaded entry each
        await catalogue.schedule([1, 1], visit_date=first + timedelta(days=day))
    redis = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        streams = await registered_streams(redis)
        assert len(streams) == 3
        waiting = sum([await redis.xlen(stream) for stream in streams])
        assert waiting > BOUND, waiting  # no persister runs: every entry waits

        status, body = await _until(http, bounded_api, 503)
        assert status == 503, body
        assert body["status"] == "not_ready"
        outbox = body["checks"].pop("outbox")
        assert re.fullmatch(
            rf"lagging: {waiting} entries waiting, oldest \d+ s \(bound {BOUND}\)", outbox
        ), outbox
        assert body["checks"] == {"redis": "ok", "postgres": "ok", "store": "ok"}

        pool = await create_pool(bounded_api.database_url, min_size=1, max_size=2)
        try:
            persister = Persister(redis, pool, config=PersisterConfig(block_s=0.1))
            assert await persister.drain(timeout_s=20)
        finally:
            await pool.close()
        assert sum([await redis.xlen(stream) for stream in streams]) == 0
    finally:
        await redis.aclose()
    status, body = await _until(http, bounded_api, 200)
    assert (status, body["checks"]["outbox"]) == (200, "ok"), body
