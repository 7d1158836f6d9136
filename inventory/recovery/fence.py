"""Noticing that Redis is behind Postgres, and refusing to sell from such a state.

Postgres learns each tag's sequence numbers only from Redis's own events, so in a
healthy system Redis's per-tag ``seq`` is never below the highest one Postgres recorded.
When it is (an empty store after a restart without its file, a failover that dropped
acknowledged writes, a restore from an old copy), units booked in the lost history would
look free: an oversell. So:

* the worker's fence monitor reads the run id of every Redis primary (one server, or
  every primary of a Cluster: a node's run id changes at every start, and a replica
  promoted by a failover has its own) every ``interval`` seconds, compares the tags of
  each primary whose run id is new to it with Postgres, and fences tags that are behind
  (they refuse every state change with ``store_fenced`` until ``inventory rebuild``);
  every ``30 * interval`` it compares every tag (a restore can also happen behind an
  unchanged run id); a primary with a new run id also has its recent bookings whose
  confirm event Postgres has not recorded looked up (a lost confirm leaves no trace in
  the sequence);
* after a full comparison of a primary's tags it records that primary's run id as
  verified, on the primary itself (a node that loses its data loses the record too).
  API processes learn each primary's run id on every new connection to it (which is
  what follows a restart) and refuse state changes with ``store_unverified`` on a tag
  whose primary's run id is not verified, which closes the window between a restart
  and the first comparison. On Cluster this is per node: a restarted node's tags are
  refused, the other nodes' tags are served.

The node of a standalone server (or of Sentinel's current master) is
:data:`STANDALONE_NODE`; a Cluster node is named ``host:port`` as redis-py names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import redis.exceptions
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.crc import key_slot

from inventory.domain import HoldState
from inventory.errors import InventoryError
from inventory.ops.backoff import TRANSIENT_ERRORS, Backoff, sleep_unless_stopped
from inventory.ops.tasks import cancel_and_wait
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.autopipeline import PipelinedConnection
from inventory.store.connection import RedisClient
from inventory.store.slot_store import GATED_CALL, SlotStore, store_error

log = structlog.get_logger(__name__)

#: The longest wait between two failed checks (Redis or Postgres away).
FENCE_BACKOFF_MAX_S = 5.0

#: Failures a check logs, backs off from and retries (a Cluster client also raises
#: SlotNotCoveredError and RedisClusterUnreachableError, outside redis-py's RedisError).
CHECK_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    redis.exceptions.RedisClusterException,
)

#: The node name of a standalone Redis server (one primary, whatever its address).
STANDALONE_NODE = "standalone"


class StoreUnverifiedError(InventoryError):
    code = "store_unverified"
    http_status = 503
    title = "The inventory store restarted and is being checked; retry shortly"


@dataclass
class VerifyReport:
    """One comparison of the tags of some primaries with Postgres."""

    #: The run ids compared, joined (one server: its run id).
    run_id: str
    tags: int = 0
    fenced: list[str] = field(default_factory=list)
    #: Node -> run id of every primary compared in full and recorded as verified.
    verified: dict[str, str] = field(default_factory=dict)


def _run_id(info: Any) -> str:
    if isinstance(info, dict) and "run_id" not in info:  # cluster: one entry per node
        return ",".join(sorted(str(v.get("run_id", "")) for v in info.values()))
    return str(info["run_id"])


def _run_id_of_info_text(text: str) -> str:
    """The run id in the text of INFO server ("" if absent)."""
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("run_id:")),
        "",
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def server_run_id(client: RedisClient) -> str:
    """The Redis server's run id (changes at every start); on Cluster every primary's
    run id, joined."""
    return _run_id(await client.info("server"))


def is_cluster(client: RedisClient) -> TypeGuard[RedisCluster]:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


async def primary_run_ids(client: RedisClient) -> dict[str, str]:
    """Node -> run id of every primary that answers (:data:`STANDALONE_NODE` for a
    single server). On Cluster each primary is asked on its own, so a dead one is
    left out instead of failing the others."""
    if not isinstance(client, RedisCluster):
        return {STANDALONE_NODE: str((await client.info("server"))["run_id"])}
    primaries = client.get_primaries()
    replies = await asyncio.gather(
        *(client.info("server", target_nodes=node) for node in primaries),
        return_exceptions=True,
    )
    found = {}
    for node, reply in zip(primaries, replies, strict=True):
        if isinstance(reply, BaseException):
            if not isinstance(reply, Exception):
                raise reply  # a cancellation is not a node's failure
            log.debug("fence.node_unreachable", node=node.name, error=str(reply))
            continue
        found[node.name] = str(reply["run_id"])
    return found


def node_of_key(client: RedisClient, key: str) -> str:
    """The primary that holds ``key`` now, as this client's slot map says."""
    if not isinstance(client, RedisCluster):
        return STANDALONE_NODE
    node = client.get_node_from_key(key)
    if node is None:  # pragma: no cover - redis-py raises SlotNotCoveredError instead
        raise redis.exceptions.SlotNotCoveredError(f"no node holds {key}")
    return str(node.name)


@functools.lru_cache(maxsize=4096)
def hashtag_for_slot(slot: int) -> str:
    """A short hash tag whose keys live in ``slot`` (found by trying names in turn)."""
    for i in itertools.count():
        candidate = f"vr{i}"
        if key_slot(candidate.encode()) == slot:
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def verified_record_key(client: RedisClient, node: str) -> str | None:
    """Where ``node``'s verification record lives: the standalone key, or on Cluster a
    key in the lowest slot the node holds (so the record lives and dies with the
    node's data). None when the slot map gives the node no slot."""
    if not isinstance(client, RedisCluster):
        return keys.VERIFIED_RUN_KEY
    slots = client.nodes_manager.slots_cache
    for slot in range(keys.CLUSTER_SLOTS):
        owners = slots.get(slot)
        if owners and owners[0].name == node:
            return keys.node_verified_key(hashtag_for_slot(slot))
    return None


async def read_verified_record(client: RedisClient, node: str) -> str | None:
    """The run id ``node``'s verification record names, if any."""
    key = verified_record_key(client, node)
    if key is None:
        return None
    value = await client.get(key)
    return None if value is None else _text(value)


async def mark_verified(client: RedisClient, node: str, run_id: str) -> None:
    """Record that ``node`` running ``run_id`` was compared with Postgres in full."""
    key = verified_record_key(client, node)
    if key is not None:
        await client.set(key, run_id)


#: How far back the fence looks for bookings whose confirm event Postgres has not
#: recorded (far beyond any persister lag the backlog alerts would let pass).
BOOKING_CHECK_WINDOW = timedelta(days=1)


async def _tags_missing_bookings(
    store: SlotStore, connection: Any, targets: Collection[str]
) -> dict[str, list[str]]:
    """Tags held by ``targets`` whose Redis lacks a booking Postgres has and whose
    confirm event Postgres never recorded. Confirm writes Postgres after Redis, so Redis
    had it; if Redis no longer does, the event was lost with Redis (a failover, a lost
    file) before the persister took it, and the tag's sequence cannot show it: Postgres
    never saw that seq. Such a unit would look free: an oversell."""
    rows = await connection.fetch(
        QUERIES["list_bookings_without_confirm_event"],
        datetime.now(tz=UTC) - BOOKING_CHECK_WINDOW,
    )
    missing: dict[str, list[str]] = {}
    for row in rows:
        tag = str(row["tag"])
        if node_of_key(store.client, keys.tag_keys(tag).meta) not in targets:
            continue
        record = await store.get_hold(row["hold_id"])
        # booked, or cancelled since (cancel also changes Redis first).
        if record is None or record.state not in (HoldState.BOOKED, HoldState.CANCELLED):
            missing.setdefault(tag, []).append(str(row["hold_id"]))
    return missing


async def verify_store(
    store: SlotStore,
    pool: Any,
    *,
    batch: int = 200,
    nodes: Collection[str] | None = None,
    check_bookings: bool = True,
) -> VerifyReport:
    """Compare the tags Postgres knows with Redis, fence those behind, then record the
    run id of each primary compared as verified. ``nodes``: only the tags these
    primaries hold (default: every primary's). ``check_bookings`` also fences tags
    missing a recent booking whose events Postgres never got
    (:func:`_tags_missing_bookings`)."""
    client = store.client
    before = await primary_run_ids(client)
    targets = set(before) if nodes is None else set(nodes) & set(before)
    async with acquire(pool, timeout_s=5.0) as connection:
        rows = await connection.fetch(QUERIES["list_all_tag_sequences"])
        missing = await _tags_missing_bookings(store, connection, targets) if check_bookings else {}
    department_rows = [
        r
        for r in rows
        if not str(r["tag"]).startswith("p:")
        and node_of_key(client, keys.tag_keys(str(r["tag"])).meta) in targets
    ]
    report = VerifyReport(
        run_id=",".join(sorted(before[n] for n in targets)), tags=len(department_rows)
    )
    for tag, hold_ids in missing.items():
        await store.fence_if_behind(tag, 2**62)  # whatever its seq
        report.fenced.append(tag)
        log.warning("fence.booking_missing", tag=tag, hold_ids=hold_ids)
    for start in range(0, len(department_rows), batch):
        chunk = department_rows[start : start + batch]
        results = await asyncio.gather(
            *(store.fence_if_behind(r["tag"], int(r["last_seq"])) for r in chunk)
        )
        for row, (fenced, redis_seq) in zip(chunk, results, strict=True):
            if fenced and row["tag"] not in missing:
                report.fenced.append(row["tag"])
                log.warning(
                    "fence.tag_fenced",
                    tag=row["tag"],
                    redis_seq=redis_seq,
                    postgres_seq=int(row["last_seq"]),
                )
    # Only a primary whose tags were compared in full is marked verified, and only if
    # it is still the same process (it may have restarted while we compared).
    after = await primary_run_ids(client)
    for node in sorted(targets):
        if after.get(node) == before[node]:
            await mark_verified(client, node, before[node])
            report.verified[node] = before[node]
    return report


async def run_fence_monitor(
    store: SlotStore, pool: Any, *, interval_s: float, stop: asyncio.Event
) -> None:
    """Compare a primary's tags whenever its run id is new (a restart, a replica
    promoted), checked every ``interval_s``, and every tag every ``30 * interval_s``
    (a restore can also happen behind an unchanged run id)."""
    known: dict[str, str] = {}
    last_full = 0.0
    loop = asyncio.get_running_loop()
    # A failed check is tried again sooner than ``interval_s`` at first: the API refuses
    # every change until a restarted server is verified, so the first answer counts.
    backoff = Backoff(min(0.2, interval_s), max(interval_s, FENCE_BACKOFF_MAX_S))
    while not stop.is_set():
        try:
            run_ids = await primary_run_ids(store.client)
            changed = {node for node, run_id in run_ids.items() if known.get(node) != run_id}
            full = loop.time() - last_full >= 30 * interval_s
            if changed or full:
                # Lost bookings are looked for when a primary changed (not every round).
                report = await verify_store(
                    store, pool, nodes=None if full else changed, check_bookings=bool(changed)
                )
                known.update(report.verified)
                if full:
                    last_full = loop.time()
                log.info(
                    "fence.verified",
                    run_id=report.run_id,
                    nodes=sorted(report.verified),
                    tags=report.tags,
                    fenced=len(report.fenced),
                )
        except CHECK_ERRORS as error:
            delay = backoff.next_delay()
            log.warning(
                "fence.check_failed",
                error=f"{type(error).__name__}: {error}",
                failures=backoff.failures,
                retry_in_s=round(delay, 2),
            )
            await sleep_unless_stopped(stop, delay)
            continue
        backoff.reset()
        await sleep_unless_stopped(stop, interval_s)


class StoreVerification:
    """The API's gate: state changes only on a Redis primary the fence has verified.

    It knows, per primary, the run id it runs now (seen on every new connection to it)
    and whether the fence has recorded that run id as verified. ``on_connect`` is
    redis-py's ``redis_connect_func`` (standalone) and :meth:`on_cluster_connect` the
    same for each Cluster node's connections: they run for every new connection, so
    the first command after a node's restart already sees its gate closed; a state
    change that itself opened the connection is refused there and then.
    """

    def __init__(self, *, required: bool, cluster: bool = False) -> None:
        self.required = required
        self.cluster = cluster
        #: Node -> the run id it runs now, as last seen.
        self._run_ids: dict[str, str] = {}
        #: Node -> the run id the fence's record verified.
        self._verified: dict[str, str] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._client: RedisClient | None = None

    def attach(self, client: RedisClient) -> None:
        """The client used to poll the verification records while a gate is closed."""
        self._client = client

    def node_verified(self, node: str) -> bool:
        """Whether state changes on ``node`` are allowed."""
        if not self.required:
            return True
        run_id = self._run_ids.get(node)
        return bool(run_id) and self._verified.get(node) == run_id

    @property
    def verified(self) -> bool:
        """Whether every primary known is verified (and one at least is known)."""
        if not self.required:
            return True
        return bool(self._run_ids) and all(self.node_verified(n) for n in self._run_ids)

    def unverified_nodes(self) -> list[str]:
        """The primaries whose current run id is not verified."""
        return sorted(n for n in self._run_ids if not self.node_verified(n))

    def observe(self, node: str, run_id: str, *, verified: bool) -> None:
        """``node`` runs ``run_id``, whose verification record matched or not."""
        self._run_ids[node] = run_id
        if verified and run_id:
            self._verified[node] = run_id
            return
        self._verified.pop(node, None)
        self._start_watcher()

    def _start_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._wait_for_verification())

    async def on_connect(self, connection: AbstractConnection) -> None:
        """Connection set-up (redis-py's own), then compare run id and record."""
        await connection.on_connect()
        if not self.required:
            return
        await connection.send_command("INFO", "server")
        info = await connection.read_response()
        await connection.send_command("GET", keys.VERIFIED_RUN_KEY)
        marker = await connection.read_response()
        self.check_connection(
            _run_id_of_info_text(_text(info)), None if marker is None else _text(marker)
        )
        if GATED_CALL.get() and not self.verified:
            # The state change that opened this connection passed the gate before
            # the restart was seen: refuse it here (the autopipeline re-checks itself).
            raise StoreUnverifiedError()

    async def on_cluster_connect(self, connection: Connection) -> None:
        """The same for a connection to one Cluster node: its run id, its record (read
        on the node itself), and a state change that opened this connection to a node
        not verified is refused (:class:`StoreUnverifiedError`)."""
        await connection.on_connect()
        if not self.required:
            return
        node = f"{connection.host}:{connection.port}"
        await connection.send_command("INFO", "server")
        run_id = _run_id_of_info_text(_text(await connection.read_response()))
        marker = None
        key = None if self._client is None else verified_record_key(self._client, node)
        if key is not None:
            await connection.send_command("GET", key)
            # A slot moved since the map was read: MOVED, so no record here (the
            # watcher reads it through the client).
            with contextlib.suppress(redis.exceptions.ResponseError):
                value = await connection.read_response()
                marker = None if value is None else _text(value)
        self.observe(node, run_id, verified=marker == run_id)
        if GATED_CALL.get() and not self.node_verified(node):
            raise StoreUnverifiedError(f"node {node} restarted and is being checked")

    async def on_raw_connect(self, connection: PipelinedConnection) -> None:
        """The same check for clients that speak RESP themselves (inventory.store.autopipeline):
        ``await connection.execute(*args)`` answers one command on the fresh connection."""
        if not self.required:
            return
        info = await connection.execute("INFO", "server")
        marker = await connection.execute("GET", keys.VERIFIED_RUN_KEY)
        self.check_connection(_run_id_of_info_text(str(info)), marker)

    def check_connection(self, run_id: str, marker: str | None) -> None:
        """Open or close the gate for a fresh connection to the standalone server
        ``run_id``, whose verification record reads ``marker``."""
        if not self.required:
            return
        self.observe(STANDALONE_NODE, run_id, verified=bool(run_id) and marker == run_id)

    async def refresh(self) -> None:
        """Read every primary's run id and record through the attached client."""
        client = self._client
        if client is None:  # not attached yet (the first connect comes first)
            return
        run_ids = await primary_run_ids(client)
        if is_cluster(client):
            # A node no longer a primary (removed, demoted) holds no tag to gate.
            current = {node.name for node in client.get_primaries()}
            for node in set(self._run_ids) - current:
                self._run_ids.pop(node, None)
                self._verified.pop(node, None)
        for node, run_id in run_ids.items():
            try:
                marker = await read_verified_record(client, node)
            except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
                marker = None  # the node went away again: asked at the next round
            self._run_ids[node] = run_id
            if marker == run_id:
                self._verified[node] = run_id
            else:
                self._verified.pop(node, None)

    async def _wait_for_verification(self) -> None:
        while self.required:
            await asyncio.sleep(0.2)
            with contextlib.suppress(Exception):
                await self.refresh()
            if self._client is not None and self.verified:
                return

    def check(self, key: str | None = None) -> None:
        """Raise :class:`StoreUnverifiedError` unless the primary holding ``key`` (on a
        single server, or with no key: every primary) is verified."""
        if not self.required:
            return
        if not self.cluster or key is None or self._client is None:
            if not self.verified:
                self._start_watcher()
                raise StoreUnverifiedError()
            return
        try:
            node = node_of_key(self._client, key)
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as error:
            raise store_error(error) from error
        if not self.node_verified(node):
            # Also a primary this process has not met yet (a replica just promoted).
            self._start_watcher()
            raise StoreUnverifiedError(f"node {node} is being checked")

    async def close(self) -> None:
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
