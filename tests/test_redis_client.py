"""inventory.store.connection against a real Redis Cluster: a spike waits for a connection
(up to the pool timeout) instead of failing at once, as on a standalone server; and
through real Sentinels: the client follows a failover to the promoted replica."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from inventory.devtools.servers import RedisClusterServers, start_redis_sentinel
from inventory.ops.config import ConfigError, Settings
from inventory.store.connection import (
    PIPELINE_HEADROOM,
    SentinelTarget,
    WaitingRedisCluster,
    connect_redis,
    parse_sentinel_url,
)

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


def test_sentinel_url_names_sentinels_service_db_and_credentials() -> None:
    """redis+sentinel://[user:password@]host:port,host:port/service[/db]?sentinel_password=."""
    target = parse_sentinel_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-b:26380,[::1]:26381"
        "/inventory/2?sentinel_password=watch"
    )
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)),
        service_name="inventory",
        db=2,
        username="app",
        password="s@cret",
        sentinel_password="watch",
    )
    assert "s@cret" not in repr(target)
    assert "watch" not in repr(target)
    assert parse_sentinel_url("redis+sentinel://h:1/svc").db == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:1", "/SERVICE_NAME"),
        ("redis+sentinel://h:1/svc/x", "not a number"),
        ("redis+sentinel://h/svc", "not host:port"),
        ("redis+sentinel://h:99999/svc", "not host:port"),
        ("redis+sentinel:///svc", "at least one Sentinel"),
    ],
)
def test_bad_sentinel_urls_are_configuration_problems(url: str, problem: str) -> None:
    """A malformed Sentinel URL stops every process at start with a readable problem."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"INVENTORY_REDIS_URL": url}, for_api=False)
    assert any(problem in p and "INVENTORY_REDIS_URL" in p for p in raised.value.problems)


def test_sentinel_and_cluster_do_not_mix() -> None:
    """INVENTORY_REDIS_CLUSTER with a Sentinel URL is refused, not half-applied."""
    with pytest.raises(ConfigError, match="REDIS_CLUSTER"):
        Settings.from_env(
            {"INVENTORY_REDIS_URL": "redis+sentinel://h:1/svc", "INVENTORY_REDIS_CLUSTER": "true"},
            for_api=False,
        )


@pytest.mark.slow
async def test_sentinel_client_follows_a_failover(tmp_path: Path) -> None:
    """One client through Sentinel: kill -9 of the primary, and the same client writes to
    the promoted replica without being rebuilt; every new connection runs the hook."""
    group = start_redis_sentinel(tmp_path)
    ports: list[int] = []

    async def hook(connection: Any) -> None:
        await connection.on_connect()
        ports.append(connection.port)

    try:
        client = await connect_redis(group.url, max_connections=4, on_connect=hook)
        try:
            await client.set("before", "1")
            assert ports == [group.primary.port]
            await asyncio.sleep(0.3)  # replicated
            group.primary.kill()
            promoted = await asyncio.to_thread(group.wait_for_failover, group.primary, 30)
            assert promoted is group.replica
            deadline = time.monotonic() + 10
            while True:
                try:
                    await client.set("after", "2")
                    break
                except RedisConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert await client.get("before") == "1"
            assert ports[-1] == group.replica.port
            assert (await client.info("replication"))["role"] == "master"
        finally:
            await client.aclose()
    finally:
        group.close()
