"""Building the redis-py asyncio client the service uses.

A spike must wait for a connection rather than fail: redis-py's default asyncio pool
raises ``MaxConnectionsError`` past its limit, so standalone clients get a
``BlockingConnectionPool`` whose timeout turns into a 503 (``store_unavailable``).
redis-py's async Cluster client has no blocking pool (each node's pool raises at once
when full: redis/redis-py#3135), and a release spike sends every reserve of a popular
department-day to the one node holding its tag; :class:`WaitingRedisCluster` makes its
commands wait in the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Connections per node left to pipelines (the /readyz backlog sample, the worker's
#: batches), which do not go through the command gate.
PIPELINE_HEADROOM = 4


class WaitingRedisCluster(RedisCluster):
    """A Cluster client whose commands wait up to ``pool_timeout_s`` for one of at most
    ``max_connections - PIPELINE_HEADROOM`` in flight, then raise ``ConnectionError``
    as ``BlockingConnectionPool`` does.

    One gate for the process: commands in flight never exceed what a node's pool
    allows, whichever nodes they go to (a per-node gate would need the slot's node
    before the command is routed, which redis-py decides inside).
    """

    def __init__(self, *args: Any, pool_timeout_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = max(1, int(kwargs.get("max_connections", 100)) - PIPELINE_HEADROOM)
        self._in_flight = asyncio.Semaphore(limit)
        self._pool_timeout_s = pool_timeout_s

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            # asyncio.timeout cancels a waiting acquire cleanly (no permit is lost).
            async with asyncio.timeout(self._pool_timeout_s):
                await self._in_flight.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_flight.release()


def startup_urls(url: str) -> list[str]:
    """The URLs of a comma-separated list: a Cluster's start-up nodes (any one that
    answers is enough to discover the cluster, so one node down does not stop a start)."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect_redis(
    url: str,
    *,
    cluster: bool = False,
    max_connections: int = 64,
    pool_timeout_s: float = 5.0,
    on_connect: Callable[[Any], Awaitable[None]] | None = None,
) -> Any:
    """A connected client for ``url`` (hiredis parses replies when installed).

    ``on_connect`` replaces redis-py's connection set-up for every new connection (it
    must call ``connection.on_connect()`` itself); standalone servers only. On Cluster
    ``url`` may name several start-up nodes, comma-separated (:func:`startup_urls`);
    credentials and options come from the first.
    """
    if cluster:
        first, *others = startup_urls(url)
        nodes = [urlsplit(other) for other in others]
        client: Any = WaitingRedisCluster.from_url(
            first,
            startup_nodes=[ClusterNode(n.hostname or "127.0.0.1", n.port or 6379) for n in nodes],
            decode_responses=True,
            max_connections=max_connections,
            pool_timeout_s=pool_timeout_s,
        )
        await _initialize_cluster(client)
        return client
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        decode_responses=True,
        health_check_interval=30,
        redis_connect_func=on_connect,
    )
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    client = Redis.from_pool(pool)
    await client.ping()
    return client


async def _initialize_cluster(client: RedisCluster) -> None:
    """Discover the cluster, starting while a master is down (its slots not failed over).

    redis-py reads its command table from, and sends keyless commands (TIME, INFO) to,
    the first master of the slot map, dead or not: the table is read first from any
    start-up node that answers, and the default node is then the first master that
    answers PING.
    """
    for node in list(client.nodes_manager.startup_nodes.values()):
        try:
            await client.commands_parser.initialize(node)
            break
        except (RedisConnectionError, RedisTimeoutError, OSError):
            continue  # the next start-up node; if none answers, initialize() says so
    await client.initialize()
    for primary in client.get_primaries():
        try:
            await client.ping(target_nodes=primary)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            continue
        client.set_default_node(primary)
        return
