"""inventory.redis_client against a real Redis Cluster: a spike waits for a connection
(up to the pool timeout) instead of failing at once, as on a standalone server."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from inventory.redis_client import PIPELINE_HEADROOM, WaitingRedisCluster, connect_redis
from inventory.servers import RedisClusterServers

#: Commands sent at once, each holding its connection for HOLD_S (a BLPOP that times out).
SPIKE = 12
HOLD_S = 0.1


def _holders(client: RedisCluster, count: int, hold_s: float) -> list[asyncio.Future[object]]:
    # One hash tag: every command goes to the same node, as a hot department-day's do.
    return [
        asyncio.ensure_future(client.blpop([f"{{spike}}:empty:{i}"], timeout=hold_s))
        for i in range(count)
    ]


async def test_plain_cluster_client_fails_past_its_pool(redis_cluster: RedisClusterServers) -> None:
    """The premise: redis-py's own async Cluster client raises at once when full."""
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True, max_connections=2)
    await client.initialize()
    try:
        results = await asyncio.gather(*_holders(client, SPIKE, HOLD_S), return_exceptions=True)
    finally:
        await client.aclose()
    assert any(isinstance(r, MaxConnectionsError) for r in results)


async def test_cluster_commands_past_the_pool_wait_their_turn(
    redis_cluster: RedisClusterServers,
) -> None:
    """With two connections' worth of gate, twelve slow commands to one node all
    succeed, two at a time."""
    client = await connect_redis(
        redis_cluster.url, cluster=True, max_connections=PIPELINE_HEADROOM + 2, pool_timeout_s=10
    )
    assert isinstance(client, WaitingRedisCluster)
    started = time.monotonic()
    try:
        results = await asyncio.gather(*_holders(client, SPIKE, HOLD_S))
    finally:
        await client.aclose()
    assert results == [None] * SPIKE
    # Two at a time: six turns of HOLD_S at least (they did wait, not run at once).
    assert time.monotonic() - started >= (SPIKE / 2) * HOLD_S * 0.9


async def test_cluster_command_that_waits_too_long_is_a_connection_error(
    redis_cluster: RedisClusterServers,
) -> None:
    """Past the pool timeout the waiting command raises ConnectionError (the store's
    503 ``store_unavailable``), as BlockingConnectionPool does; the gate is whole
    again afterwards."""
    client = await connect_redis(
        redis_cluster.url, cluster=True, max_connections=PIPELINE_HEADROOM + 1, pool_timeout_s=0.2
    )
    try:
        (holder,) = _holders(client, 1, 1.0)
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        assert await holder is None
        assert await client.ping() is True
    finally:
        await client.aclose()
