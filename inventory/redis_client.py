"""Building the redis-py asyncio client the service uses.

A spike must wait for a connection rather than fail: redis-py's default asyncio pool
raises ``MaxConnectionsError`` past its limit, so standalone clients get a
``BlockingConnectionPool`` whose timeout turns into a 503 (``store_unavailable``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster


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
    must call ``connection.on_connect()`` itself); standalone servers only.
    """
    if cluster:
        client: Any = RedisCluster.from_url(
            url, decode_responses=True, max_connections=max_connections
        )
        await client.initialize()
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
