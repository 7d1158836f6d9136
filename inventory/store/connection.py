"""Building the redis-py asyncio client the service uses.

A spike must wait for a connection rather than fail: redis-py's default asyncio pool
raises ``MaxConnectionsError`` past its limit, so standalone clients get a
``BlockingConnectionPool`` whose timeout turns into a 503 (``store_unavailable``).
redis-py's async Cluster client has no blocking pool (each node's pool raises at once
when full: redis/redis-py#3135), and a release spike sends every reserve of a popular
department-day to the one node holding its tag; :class:`WaitingRedisCluster` makes its
commands wait in the same way.

A ``redis+sentinel://`` URL (:func:`parse_sentinel_url`) connects through Redis Sentinel:
every new connection asks the Sentinels for the current primary, so after a failover the
clients follow the promoted replica without a restart (connections to the old primary fail
or answer READONLY, are dropped, and the next one goes to the new primary). The pool is
blocking as for a standalone server.

A Cluster client fails fast on a node that is down: connecting gives up after
:data:`CLUSTER_CONNECT_TIMEOUT_S` and a failed command is retried
:data:`CLUSTER_RETRIES` time(s) after a short backoff (redis-py's default, ten retries
with up to a second between them plus 0.25 s per ``CLUSTERDOWN``, held each failing
request about 4 s: long enough to fill the API's admission cap during an outage), and
a node that said the whole cluster is down is taken at its word for
:data:`CLUSTER_DOWN_HOLD_S` (redis-py waits 0.25 s at every such answer). The
answer is a 503 ``store_unavailable`` with Retry-After; the caller retries with the same
Idempotency-Key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inventory.ops.redact import redact
from inventory.store.version import MIN_REDIS_VERSION, version_text

#: The redis-py client the service uses: a single server (also one reached through
#: Sentinel) or a Cluster.
RedisClient: TypeAlias = Redis | RedisCluster


class UnsupportedRedisError(RuntimeError):
    """The Redis server is older than :data:`inventory.store.version.MIN_REDIS_VERSION`; the
    service refuses to start on it (the message says which server, which version, and
    what to do)."""


async def require_supported_server(client: RedisClient, url: str) -> str:
    """The server's ``redis_version`` (the lowest of a Cluster's nodes); raises
    :class:`UnsupportedRedisError` below the minimum.

    Checked when a client connects, so every command refuses an old server at start-up
    with one clear message, instead of running with script shebangs off and a backlog
    figure that is wrong (``XINFO GROUPS`` has no ``lag`` before 7.0).
    """
    info = await client.info("server")
    # A RedisCluster client answers one entry per node.
    nodes = [info] if "redis_version" in info else list(info.values())
    versions = sorted(
        (tuple(int(p) for p in str(node["redis_version"]).split(".") if p.isdigit()), node)
        for node in nodes
    )
    lowest, node = versions[0]
    if lowest < MIN_REDIS_VERSION:
        wanted = version_text(MIN_REDIS_VERSION)
        raise UnsupportedRedisError(
            f"the Redis server at {redact(url)} is version {node['redis_version']}; "
            f"slot-inventory needs Redis {wanted} or later (or Valkey): its scripts carry "
            f"the {wanted} shebang and the outbox backlog is read from XINFO GROUPS's lag. "
            "Upgrade the server, or for local use install the servers extra "
            "(pip install 'slot-inventory[servers]') and let `inventory dev` start one."
        )
    return str(node["redis_version"])


#: Connections per node left to pipelines (the /readyz backlog sample, the worker's
#: batches), which do not go through the command gate.
PIPELINE_HEADROOM = 4
#: How long a Cluster client waits for a node's TCP connection (loopback or one data
#: centre: a live node accepts in milliseconds; a dead one refuses at once or never).
CLUSTER_CONNECT_TIMEOUT_S = 0.5
#: Retries of a failed Cluster command (after a topology refresh); one rides through
#: a slot that just moved or a connection the server closed.
CLUSTER_RETRIES = 1
#: The backoff before that retry: at most this many seconds.
CLUSTER_RETRY_CAP_S = 0.05
#: After a node answered "CLUSTERDOWN The cluster is down", its commands are answered so
#: at once for this long (then it is asked again): recovery is seen at most this late.
CLUSTER_DOWN_HOLD_S = 0.5


class WaitingRedisCluster(RedisCluster):
    """A Cluster client whose commands wait up to ``pool_timeout_s`` for one of at most
    ``max_connections - PIPELINE_HEADROOM`` in flight, then raise ``ConnectionError``
    as ``BlockingConnectionPool`` does.

    One gate for the process: commands in flight never exceed what a node's pool
    allows, whichever nodes they go to (a per-node gate would need the slot's node
    before the command is routed, which redis-py decides inside).
    """

    #: Errors a command is retried on (within :data:`CLUSTER_RETRIES`). Not CLUSTERDOWN:
    #: redis-py already waits 0.25 s and reads the slot map again before raising it, and
    #: a cluster that is down stays so for seconds; one more round only doubled the wait
    #: of every request (and a reserve meets it twice: rate limits, then the hold).
    # redis-py types the attribute as its own four-class tuple.
    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.SlotNotCoveredError,
    )

    def __init__(self, *args: Any, pool_timeout_s: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = max(1, int(kwargs.get("max_connections", 100)) - PIPELINE_HEADROOM)
        self._in_flight = asyncio.Semaphore(limit)
        self._pool_timeout_s = pool_timeout_s
        #: Node name -> loop time until which it is taken as saying "cluster down".
        self._cluster_down_until: dict[str, float] = {}

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        """redis-py's send to one node, answered at once with ``CLUSTERDOWN`` for
        :data:`CLUSTER_DOWN_HOLD_S` after that node last said the whole cluster is down:
        redis-py waits 0.25 s and reads the slot map again at every such answer, and a
        reserve makes several calls, so each failing request took about a second."""
        loop = asyncio.get_running_loop()
        down_until = self._cluster_down_until.get(target_node.name, 0.0)
        if down_until > loop.time():
            raise redis.exceptions.ClusterDownError(
                f"The cluster is down (as {target_node.name} said less than "
                f"{CLUSTER_DOWN_HOLD_S:g} s ago)"
            )
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        except redis.exceptions.ClusterDownError as error:
            # "Hash slot not served" concerns one slot (other keys of the node are
            # fine); "The cluster is down" is the node's whole state.
            if "cluster is down" in str(error).lower():
                self._cluster_down_until[target_node.name] = loop.time() + CLUSTER_DOWN_HOLD_S
            raise

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


#: The URL scheme of a Redis reached through Sentinel.
SENTINEL_SCHEME = "redis+sentinel"

#: Sentinels answer within this, or discovery moves on to the next one.
SENTINEL_SOCKET_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the Sentinels, the monitored primary's
    service name, the database, and credentials (for the data nodes; the Sentinels' own
    come from the ``sentinel_username`` / ``sentinel_password`` query parameters)."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Redis reached through Sentinel."""
    return urlsplit(url).scheme == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
    (``?sentinel_password=...&sentinel_username=...`` for Sentinels that require AUTH).

    Raises ValueError with what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"expected a {SENTINEL_SCHEME}:// URL")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    sentinels: list[tuple[str, int]] = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        host, sep, port_text = item.rpartition(":")
        if not sep or not host or not port_text.isdecimal() or not 0 < int(port_text) < 65536:
            raise ValueError(f"Sentinel address {item!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port_text)))
    if not sentinels:
        raise ValueError("at least one Sentinel host:port is required")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("the path must be /SERVICE_NAME or /SERVICE_NAME/DB")
    db = 0
    if len(path) == 2:
        if not path[1].isdecimal():
            raise ValueError(f"database {path[1]!r} is not a number")
        db = int(path[1])
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return SentinelTarget(
        sentinels=tuple(sentinels),
        service_name=path[0],
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
    )


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (each new connection goes to the current primary) that waits for a
    free connection as :class:`BlockingConnectionPool` does."""


class SentinelRedis(Redis):
    """A client of the primary Sentinel names; closing it closes the Sentinel clients."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                await self.sentinel_manager.aclose()


def sentinel_for(target: SentinelTarget) -> Sentinel:
    """A redis-py Sentinel manager for ``target`` (no commands sent yet)."""
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        "decode_responses": True,
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
        sentinel_kwargs["username"] = target.sentinel_username
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)


async def connect_redis(
    url: str,
    *,
    cluster: bool = False,
    max_connections: int = 64,
    pool_timeout_s: float = 5.0,
    on_connect: Callable[[Connection], Awaitable[None]] | None = None,
    before_initialize: Callable[[RedisCluster], None] | None = None,
    check_version: bool = True,
) -> RedisClient:
    """A connected client for ``url`` (hiredis parses replies when installed).

    ``on_connect`` replaces redis-py's connection set-up for every new connection (it
    must call ``connection.on_connect()`` itself); on Cluster, for every connection to
    every node (``before_initialize`` sees a Cluster client before it first connects). On
    Cluster ``url`` may name several start-up nodes, comma-separated (:func:`startup_urls`);
    credentials and options come from the first. A ``redis+sentinel://`` URL connects to
    the primary its Sentinels name.
    Raises :class:`UnsupportedRedisError` for a server below the minimum version unless
    ``check_version`` is False.
    """
    if is_sentinel_url(url):
        if cluster:
            raise ValueError("a redis+sentinel:// URL cannot be a Redis Cluster")
        target = parse_sentinel_url(url)
        sentinel = sentinel_for(target)
        # redis-py's pool classes are untyped.
        sentinel_pool = BlockingSentinelConnectionPool(  # type: ignore[no-untyped-call]
            target.service_name,
            sentinel,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            db=target.db,
            username=target.username,
            password=target.password,
            decode_responses=True,
            health_check_interval=30,
            redis_connect_func=on_connect,
        )
        sentinel_client = SentinelRedis(connection_pool=sentinel_pool)
        # The client owns the pool (as from_pool does): aclose() closes its connections.
        sentinel_client.auto_close_connection_pool = True
        sentinel_client.sentinel_manager = sentinel
        try:
            await sentinel_client.ping()
            if check_version:
                await require_supported_server(sentinel_client, url)
        except BaseException:
            await sentinel_client.aclose()
            raise
        return sentinel_client
    if cluster:
        first, *others = startup_urls(url)
        nodes = [urlsplit(other) for other in others]
        cluster_client = WaitingRedisCluster.from_url(
            first,
            startup_nodes=[ClusterNode(n.hostname or "127.0.0.1", n.port or 6379) for n in nodes],
            decode_responses=True,
            max_connections=max_connections,
            pool_timeout_s=pool_timeout_s,
            socket_connect_timeout=CLUSTER_CONNECT_TIMEOUT_S,
            retry=Retry(
                ExponentialWithJitterBackoff(base=0.01, cap=CLUSTER_RETRY_CAP_S),
                retries=CLUSTER_RETRIES,
            ),
        )
        if on_connect is not None:
            # connection_kwargs is shared with the nodes manager (nodes found later);
            # the start-up nodes took their own copy when they were built.
            cluster_client.connection_kwargs["redis_connect_func"] = on_connect
            for node in cluster_client.startup_nodes:
                node.connection_kwargs["redis_connect_func"] = on_connect
        if before_initialize is not None:
            before_initialize(cluster_client)
        try:
            await _initialize_cluster(cluster_client)
            if check_version:
                await require_supported_server(cluster_client, url)
        except BaseException:
            await cluster_client.aclose()
            raise
        return cluster_client
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
    try:
        await client.ping()
        if check_version:
            await require_supported_server(client, url)
    except BaseException:
        await client.aclose()
        raise
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


class StoreNotReadyError(Exception):
    """What makes the store unable to serve now (for readiness probes)."""


async def check_store(client: RedisClient) -> None:
    """Raise :class:`StoreNotReadyError` (or the driver's error) unless the store can
    serve: a single server answers PING; on Cluster every primary of the slot map
    answers and reports ``cluster_state:ok`` (any node answers PING while the cluster
    is down, so PING alone says nothing)."""
    if not isinstance(client, RedisCluster):
        await client.ping()
        return
    primaries = client.get_primaries()
    replies = await asyncio.gather(
        *(client.cluster_info(target_nodes=node) for node in primaries),
        return_exceptions=True,
    )
    problems = []
    for node, reply in zip(primaries, replies, strict=True):
        if isinstance(reply, BaseException):
            if not isinstance(reply, Exception):
                raise reply
            problems.append(f"{node.name} unreachable ({type(reply).__name__})")
        elif str(reply.get("cluster_state")) != "ok":
            problems.append(f"{node.name} reports cluster_state:{reply.get('cluster_state')}")
    if not primaries:
        problems.append("no primary known")
    if problems:
        raise StoreNotReadyError("; ".join(problems))
