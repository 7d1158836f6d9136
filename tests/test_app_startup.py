"""The app's start-up against a real Redis: a step that fails after Redis connected
closes what was already opened (the redis-py client, the auto-pipelined connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiohttp import web
from redis.asyncio import Redis

from inventory.api.admission import AdmissionGate
from inventory.app import GATE, SETTINGS, services_context
from inventory.devtools.servers import RedisServer, free_port, start_redis
from inventory.ops.config import Settings


@pytest.fixture(scope="module")
def redis_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: its client count is this module's alone."""
    with start_redis(tmp_path_factory.mktemp("startup-redis"), appendonly=False) as server:
        yield server


async def _client_count(observer: Redis, *, expected: int, wait_s: float = 3.0) -> int:
    """The server's connection count, once it is ``expected`` or ``wait_s`` passed (the
    server sees a closed socket a moment after the client closed it)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        count = len(await observer.client_list())
        if count == expected or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("autopipeline", [True, False], ids=["autopipeline", "redis-py"])
async def test_a_failed_start_closes_the_redis_connections(
    redis_alone: RedisServer, autopipeline: bool
) -> None:
    """A start-up that fails after Redis connected (here: no field-encryption keys, with
    Postgres unreachable) leaves the server with the connections it had before."""
    settings = Settings(
        redis_url=redis_alone.url,
        redis_autopipeline=autopipeline,
        # Nothing listens there: the pool starts without connecting.
        database_url=f"postgresql://127.0.0.1:{free_port()}/inventory",
        field_keys="",
    )
    app = web.Application()
    app[SETTINGS] = settings
    app[GATE] = AdmissionGate(8)
    observer = Redis.from_url(redis_alone.url, decode_responses=True)
    try:
        before = len(await observer.client_list())
        starting = services_context(app)
        with pytest.raises(ValueError, match="field-encryption key"):
            await anext(starting)
        assert await _client_count(observer, expected=before) == before
    finally:
        await observer.aclose()
