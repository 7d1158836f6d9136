"""The persister: outbox streams -> Postgres, at least once, idempotently.

Every state-changing script appends one event to its tag's outbox stream
(``inv:{<tag>}:outbox``, one per hash tag, see :mod:`inventory.store.keys`). The persister is a
consumer group (``persister``) over all of them:

1. **Find the streams**: SCAN for the outbox pattern every ``scan_interval_s`` (every
   primary of a Cluster) and create the group at id 0 on each new one, so entries
   written before the group existed are read too. A stream that vanished (a rebuild
   deletes its tag's stream) answers NOGROUP: the group is created again if the stream
   is back, forgotten otherwise.
2. **Read**: first the entries this consumer already had (its pending list, id 0: a
   restart under the same name), then new ones (``>``), with XREADGROUP over many
   streams at once (COUNT, BLOCK). Entries pending on a consumer that died are taken
   over with XAUTOCLAIM once idle for ``claim_min_idle_s``; a non-empty list of deleted
   ids in its reply means entries were removed from a stream before they were
   acknowledged, i.e. lost: that is counted and logged as an incident.
3. **Write**: one Postgres transaction per batch (:func:`inventory.record.projection.write_batch`):
   events are keyed by ``(tag, seq)``, so a redelivered entry changes nothing; an event
   whose ``(tag, seq)`` is recorded under another stream id means Redis's history is not
   the one Postgres recorded: it is not applied, the tag goes to the ``on_diverged`` hook
   (the fence), and the entry is acknowledged.
4. **Acknowledge**: XACK, then XDEL, only after the commit. Nothing trims by MAXLEN; an
   acknowledged entry is deleted by id, so a stream holds only entries not yet
   persisted. (XDEL is skipped on a stream that another consumer group also reads.)

Faults:

* Postgres down, or any other failure that is not the entry's fault: the batch is
  retried with capped exponential back-off until it commits; the entries stay pending
  in Redis meanwhile (the outbox buffers), nothing is lost, and the loop never dies.
* A batch that fails for a reason in its data (a constraint, a malformed entry) is
  retried entry by entry, so one poison entry does not hold up the others. An entry that
  still fails stays pending and is tried again; once delivered ``max_attempts`` times
  (XPENDING's delivery count, which survives restarts) it is written to ``dead_letters``
  and acknowledged.
* Redis down: the loop logs, backs off and resumes.
* A Redis Cluster master down (or its slots served by no master): only its streams
  wait. Discovery scans each master on its own, and every per-stream call that finds
  its node out of reach sets that stream aside for ``retry_max_s`` (its entries stay
  pending or undelivered, to be read again once the node or its promoted replica
  answers); the other masters' streams go on being persisted.

Test hook (never set it in production): ``INVENTORY_PERSISTER_CRASH_AFTER_COMMIT=<p>``
makes the process exit at once (``os._exit(137)``, as if SIGKILLed) right after a batch
commits and before its XACK, with probability ``p`` per batch. The fault tests use it to
hit the window where an entry is durable in Postgres but still pending in Redis.

Redis Cluster: reads, claims and acknowledgements are per stream (each stream is its own
hash slot, and a command's keys must share one), issued concurrently; new entries are
then polled every ``block_s`` instead of blocking. Standalone servers read up to
``streams_per_read`` streams per XREADGROUP.

The client must decode responses (``decode_responses=True``, as
:func:`inventory.store.connection.connect_redis` builds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import os
import random
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis.exceptions
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.typing import KeyT, StreamIdT

from inventory.errors import StoreUnavailableError
from inventory.ops import metrics
from inventory.record.errors import DatabaseBusyError, DatabaseUnavailableError
from inventory.record.pool import acquire, database_errors
from inventory.record.projection import (
    BatchOutcome,
    ConcurrentWriteError,
    MalformedEntryError,
    OutboxEntry,
    PatientEvent,
    TagEvent,
    parse_entry,
    record_dead_letter,
    write_batch,
)
from inventory.store import keys
from inventory.store.backlog import group_position
from inventory.store.connection import RedisClient

log = structlog.get_logger(__name__)

#: The consumer group every persister process joins.
GROUP: Final = "persister"
#: Test-only: probability of exiting right after a commit, before the XACK.
CRASH_AFTER_COMMIT_ENV: Final = "INVENTORY_PERSISTER_CRASH_AFTER_COMMIT"
#: SQLSTATE classes that mean "this entry's data is refused": 22 data exception,
#: 23 integrity constraint violation. Anything else is retried, never dead-lettered.
_POISON_SQLSTATE_CLASSES: Final = ("22", "23")

#: asyncpg's client-side "invalid input for query argument" (not the SQLSTATE 22 class).
_CLIENT_DATA_ERROR: Final[type[Exception]] = asyncpg.exceptions._base.DataError

#: ``on_diverged(tag)``: fence the tag (may be a coroutine function).
DivergedHook = Callable[[str], Awaitable[None] | None]


def default_consumer_name() -> str:
    """``<host>-<pid>``: unique per process. A stable name (e.g. a pod name) lets a
    restarted persister read its own pending entries at once, without XAUTOCLAIM."""
    return f"{socket.gethostname()}-{os.getpid()}"


def crash_probability_from_env() -> float:
    """The test hook's probability from the environment (0 when unset or invalid)."""
    raw = os.environ.get(CRASH_AFTER_COMMIT_ENV, "").strip()
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        return 0.0
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


@dataclass(frozen=True, slots=True)
class PersisterConfig:
    """How the persister reads and writes. Durations in seconds."""

    group: str = GROUP
    consumer: str = field(default_factory=default_consumer_name)
    #: SCAN patterns of the streams to persist (tests narrow it to their own tags).
    match: tuple[str, ...] = (keys.OUTBOX_SCAN_PATTERN,)
    #: Entries per Postgres transaction (and the COUNT of a read, per stream).
    batch_size: int = 500
    #: Transactions written at once, each on its own connection, over disjoint streams
    #: (the pool needs at least this many connections).
    writers: int = 2
    #: How long a read of new entries blocks (and the poll interval on a Cluster).
    block_s: float = 1.0
    scan_interval_s: float = 2.0
    #: Entries pending this long on any consumer are taken over (XAUTOCLAIM).
    claim_min_idle_s: float = 30.0
    #: How often XAUTOCLAIM runs; default: half of claim_min_idle_s, within 0.5..5 s.
    claim_interval_s: float | None = None
    #: Deliveries after which an entry that keeps failing goes to dead_letters.
    max_attempts: int = 5
    #: Back-off while Postgres (or Redis) is unavailable: doubling, capped, with jitter.
    retry_initial_s: float = 0.1
    retry_max_s: float = 2.0
    #: Wait before a failed entry is read again from the pending list.
    poison_retry_s: float = 0.5
    #: How often per-stream lag and pending are sampled (XINFO GROUPS).
    stats_interval_s: float = 5.0
    #: Streams per XREADGROUP on a standalone server (a read returns at most
    #: batch_size entries per stream, so this bounds the entries held in memory).
    streams_per_read: int = 128
    #: Wait for a Postgres connection before counting the attempt as failed.
    acquire_timeout_s: float = 5.0
    #: Test hook, see the module docstring; default from the environment.
    crash_after_commit: float = field(default_factory=crash_probability_from_env)

    def __post_init__(self) -> None:
        if not self.group or not self.consumer:
            raise ValueError("group and consumer must not be empty")
        if not self.match:
            raise ValueError("at least one stream pattern is needed")
        if min(self.batch_size, self.max_attempts, self.streams_per_read, self.writers) < 1:
            raise ValueError("batch_size, max_attempts, streams_per_read and writers must be >= 1")
        for name in (
            "block_s",
            "scan_interval_s",
            "claim_min_idle_s",
            "retry_initial_s",
            "retry_max_s",
            "stats_interval_s",
            "acquire_timeout_s",
        ):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.poison_retry_s < 0:
            raise ValueError("poison_retry_s must not be negative")

    @property
    def claim_every_s(self) -> float:
        """Seconds between XAUTOCLAIM passes."""
        if self.claim_interval_s is not None:
            return self.claim_interval_s
        return min(5.0, max(0.5, self.claim_min_idle_s / 2))


@dataclass
class PersisterStats:
    """Numbers for metrics and /readyz, updated in place by the persister.

    ``lag`` and ``pending`` are sampled every ``stats_interval_s``; the counters are
    totals since start. ``db_available`` turns False when a write fails for a reason
    that is not the data's and True again after the next commit. After each commit the
    batch figures are set first and ``last_commit_at`` last (a subclass may observe it).
    """

    #: Outbox streams known (found by SCAN).
    streams: int = 0
    #: Per stream: entries not yet delivered to the group (XINFO GROUPS lag).
    lag: dict[str, int] = field(default_factory=dict)
    #: Per stream: entries delivered but not yet acknowledged.
    pending: dict[str, int] = field(default_factory=dict)
    total_lag: int = 0
    total_pending: int = 0
    batches: int = 0
    last_batch_size: int = 0
    last_batch_latency_s: float = 0.0
    #: Events newly recorded in Postgres (department-day tags).
    events_persisted: int = 0
    #: Ban decisions of patient tags written.
    patient_events: int = 0
    #: Redeliveries found already recorded (nothing changed).
    duplicates: int = 0
    #: Events whose (tag, seq) Postgres holds under another stream id.
    diverged: int = 0
    #: Entries written to dead_letters after max_attempts.
    dead_letters: int = 0
    #: Entries taken over from other consumers.
    autoclaimed: int = 0
    #: Entries XAUTOCLAIM found deleted while pending: lost events, an incident.
    autoclaim_deleted: int = 0
    #: Own pending entries found deleted when read again: also lost events.
    pending_deleted: int = 0
    #: Failed write attempts that were retried (Postgres unavailable and the like).
    db_failures: int = 0
    db_available: bool = True
    redis_failures: int = 0
    last_error: str = ""
    #: Unix time of the last commit (0 = none yet).
    last_commit_at: float = 0.0
    #: Unix time of the last lag/pending sample (0 = none yet).
    sampled_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (per-stream figures included)."""
        return {
            "streams": self.streams,
            "total_lag": self.total_lag,
            "total_pending": self.total_pending,
            "lag": dict(self.lag),
            "pending": dict(self.pending),
            "batches": self.batches,
            "last_batch_size": self.last_batch_size,
            "last_batch_latency_s": round(self.last_batch_latency_s, 6),
            "events_persisted": self.events_persisted,
            "patient_events": self.patient_events,
            "duplicates": self.duplicates,
            "diverged": self.diverged,
            "dead_letters": self.dead_letters,
            "autoclaimed": self.autoclaimed,
            "autoclaim_deleted": self.autoclaim_deleted,
            "pending_deleted": self.pending_deleted,
            "db_failures": self.db_failures,
            "db_available": self.db_available,
            "redis_failures": self.redis_failures,
            "last_error": self.last_error,
            "last_commit_at": self.last_commit_at,
            "sampled_at": self.sampled_at,
        }


class _Stopped(Exception):
    """The stop event was set while a batch was still being retried."""


@dataclass
class _StreamState:
    #: Where the next read of this consumer's pending list starts; ">" once it is empty.
    cursor: str = "0-0"
    #: Monotonic time before which the pending list is not read again (failed entries).
    retry_at: float = 0.0
    #: Another consumer group reads this stream too: acknowledged entries stay in it.
    shared: bool = False
    #: Monotonic time before which the stream is left alone: its Cluster node was out
    #: of reach (the other streams go on meanwhile).
    down_until: float = 0.0


class _Backoff:
    """Capped exponential back-off with full jitter."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self._next = initial_s

    def reset(self) -> None:
        self._next = self._initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._max, self._next * 2)
        return random.uniform(delay / 2, delay)


#: A per-stream call that failed because the stream's node is out of reach (down, or its
#: slots served by no master), not because of the call: on Cluster only that stream waits.
_NODE_DOWN_ERRORS: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
    StoreUnavailableError,
    OSError,
    TimeoutError,
)


def _is_poison_error(error: BaseException) -> bool:
    """Whether a failed write is the entry's fault (retry entry by entry, then
    dead-letter) rather than the database's (retry the batch until it commits)."""
    if isinstance(error, MalformedEntryError):
        return True
    if isinstance(error, _CLIENT_DATA_ERROR):  # a value asyncpg cannot encode
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        return state[:2] in _POISON_SQLSTATE_CLASSES
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(reply: Any) -> list[tuple[str, Any]]:
    """XREADGROUP's reply as (stream, entries) pairs, for RESP2 lists and RESP3 maps."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(_text(k), v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(_text(stream), entries) for stream, entries in reply]


def _entry(stream: str, raw_id: Any, fields: Any) -> OutboxEntry | None:
    """The entry, or None when its content is gone (an entry always has a field; a
    pending entry deleted from the stream is read back as an id without fields).
    Fields arrive decoded (``decode_responses=True``)."""
    if not fields:
        return None
    return OutboxEntry(stream=stream, entry_id=_text(raw_id), fields=fields)


class Persister:
    """One persister process's consumer: see the module docstring.

    ``redis`` is a redis-py asyncio client (standalone or Cluster) with decoded
    responses; ``pool`` an asyncpg pool from :func:`inventory.record.pool.create_pool`
    (``init_size=0`` lets it start while Postgres is down). ``stats`` is updated in place.
    """

    def __init__(
        self,
        redis: RedisClient,
        pool: asyncpg.Pool,
        *,
        config: PersisterConfig | None = None,
        stats: PersisterStats | None = None,
        on_diverged: DivergedHook | None = None,
    ) -> None:
        self.redis = redis
        self.pool = pool
        self.config = config or PersisterConfig()
        self.stats = stats if stats is not None else PersisterStats()
        self.on_diverged = on_diverged
        self.cluster = isinstance(redis, RedisCluster)
        self._streams: dict[str, _StreamState] = {}
        self._next_scan = 0.0
        self._next_claim = 0.0
        self._next_sample = 0.0
        self._stop = asyncio.Event()
        self._db_backoff = _Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        if self.config.crash_after_commit > 0:
            log.warning(
                "outbox.crash_hook_armed",
                probability=self.config.crash_after_commit,
                note="test-only: the process exits after some commits, before XACK",
            )

    # -- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Persist until ``stop`` is set. Never returns early: Redis and Postgres
        failures are logged and retried with back-off."""
        self._stop = stop
        backoff = _Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        log.info(
            "outbox.persister_started",
            group=self.config.group,
            consumer=self.config.consumer,
            match=list(self.config.match),
            cluster=self.cluster,
        )
        while not stop.is_set():
            try:
                await self.step(block=True)
            except _Stopped:
                break
            except (redis.exceptions.RedisError, StoreUnavailableError, OSError) as error:
                self.stats.redis_failures += 1
                self.stats.last_error = f"redis: {type(error).__name__}: {error}"
                log.warning("outbox.redis_failed", error=self.stats.last_error)
                self._reread_pending()
                await self._sleep(backoff.next_delay())
            except Exception as error:
                # A bug must not end the loop: entries stay pending and are tried again.
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.error("outbox.step_failed", error=self.stats.last_error, exc_info=error)
                self._reread_pending()
                await self._sleep(backoff.next_delay())
            else:
                backoff.reset()
        log.info("outbox.persister_stopped", **self._summary())

    async def step(self, *, block: bool = False) -> int:
        """One round: find streams, sample stats, claim, read and persist what is there.

        Returns the number of entries handled. ``block`` lets the read of new entries
        wait up to ``block_s`` when there is nothing else to do.
        """
        now = time.monotonic()
        if now >= self._next_scan:
            await self.discover()
            self._next_scan = time.monotonic() + self.config.scan_interval_s
        if now >= self._next_sample:
            await self.sample()
        handled = 0
        if now >= self._next_claim:
            handled += await self._claim_and_persist()
            self._next_claim = time.monotonic() + self.config.claim_every_s
        handled += await self._read_pending_and_persist()
        if handled:
            block = False
        if not self._streams:
            if block:
                await self._sleep(min(self.config.block_s, self.config.scan_interval_s))
            return handled
        entries = await self._read_new(block_s=self.config.block_s if block else None)
        await self._persist(entries)
        return handled + len(entries)

    async def drain(self, *, timeout_s: float = 30.0) -> bool:
        """Run steps until no stream has undelivered or pending entries (or ``timeout_s``
        passes); True when caught up. Meant for tests, tools and benchmarks.

        A stream set aside (its Cluster node out of reach) or not sampled yet is not
        caught up: the sums of the figures would leave it out (a stream set aside keeps
        its last figures, and one never sampled has none) and report a backlog of 0."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._next_scan = 0.0
            handled = await self.step()
            if handled == 0:
                await self.sample()
                if (
                    self.stats.total_lag == 0
                    and self.stats.total_pending == 0
                    and self._every_stream_sampled()
                ):
                    return True
                # Pending elsewhere (a dead consumer): claim regardless of the interval.
                self._next_claim = 0.0
                await asyncio.sleep(0.05)
        return False

    def _reread_pending(self) -> None:
        """After a failed step some entries may be read (or committed) and not yet
        acknowledged: read this consumer's pending lists again before anything new."""
        for state in self._streams.values():
            state.cursor = "0-0"

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    # -- streams ----------------------------------------------------------------------

    async def discover(self) -> int:
        """SCAN for outbox streams and join the new ones; returns how many are known."""
        found: set[str] = set()
        complete = True
        if isinstance(self.redis, RedisCluster):
            complete = await self._scan_masters(self.redis, found)
        else:
            for pattern in self.config.match:
                async for key in self.redis.scan_iter(match=pattern, count=1000, _type="stream"):
                    found.add(_text(key))
        new = [s for s in sorted(found - self._streams.keys()) if await self._ensure_group(s)]
        for stream in new:
            self._streams[stream] = _StreamState()
        if new:
            # Before anything of theirs is acknowledged: whether another group reads them.
            await self._sample_streams(new)
        if complete:
            # A master that did not answer may still hold its streams: forget none then.
            for stream in set(self._streams) - found:
                self._forget(stream)
        self.stats.streams = len(self._streams)
        return len(self._streams)

    async def _scan_masters(self, cluster: RedisCluster, found: set[str]) -> bool:
        """SCAN every Cluster master on its own into ``found``; False if one did not
        answer (its streams are then neither found nor forgotten)."""
        complete = True
        for node in cluster.get_primaries():
            try:
                for pattern in self.config.match:
                    cursor = 0
                    while True:
                        cursor, batch = await node.execute_command(
                            "SCAN", cursor, "MATCH", pattern, "COUNT", 1000, "TYPE", "stream"
                        )
                        found.update(_text(key) for key in batch)
                        if int(cursor) == 0:
                            break
            except _NODE_DOWN_ERRORS as error:
                complete = False
                self.stats.redis_failures += 1
                self.stats.last_error = f"redis: {node.name}: {type(error).__name__}: {error}"
                log.warning("outbox.scan_failed", node=node.name, error=self.stats.last_error)
        return complete

    async def _ensure_group(self, stream: str) -> bool:
        """Create the group at id 0 (every entry of the stream is read); False if the
        stream does not exist. No MKSTREAM: a deleted stream must not come back empty."""
        try:
            await self.redis.xgroup_create(stream, self.config.group, id="0")
        except redis.exceptions.ResponseError as error:
            text = str(error)
            if text.startswith("BUSYGROUP"):
                return True
            if "requires the key to exist" in text:
                return False
            raise
        log.info("outbox.group_created", stream=stream, group=self.config.group)
        return True

    def _forget(self, stream: str) -> None:
        self._streams.pop(stream, None)
        self.stats.lag.pop(stream, None)
        self.stats.pending.pop(stream, None)
        self.stats.streams = len(self._streams)

    async def _repair_groups(self, streams: Iterable[str]) -> None:
        """After NOGROUP: recreate the group on streams that exist, forget the rest."""
        for stream in list(streams):
            if await self.redis.exists(stream) and await self._ensure_group(stream):
                state = self._streams.get(stream)
                if state is not None:
                    state.cursor = "0-0"
            else:
                self._forget(stream)

    async def sample(self) -> None:
        """Sample each stream's lag and pending (XINFO GROUPS) into the stats (streams
        set aside keep their last figures)."""
        self._next_sample = time.monotonic() + self.config.stats_interval_s
        await self._sample_streams(self._reachable(time.monotonic()))
        self.stats.sampled_at = time.time()

    async def _sample_streams(self, streams: list[str]) -> None:
        results = await self._each(streams, self._sample_stream)
        for stream, result in zip(streams, results, strict=True):
            if result is None:
                continue
            lag, pending, shared = result
            self.stats.lag[stream] = lag
            self.stats.pending[stream] = pending
            state = self._streams.get(stream)
            if state is not None:
                state.shared = shared
        self.stats.total_lag = sum(self.stats.lag.values())
        self.stats.total_pending = sum(self.stats.pending.values())

    async def _sample_stream(self, stream: str) -> tuple[int, int, bool] | None:
        try:
            groups = await self.redis.xinfo_groups(stream)
        except redis.exceptions.ResponseError as error:
            if isinstance(error, redis.exceptions.ClusterError):
                raise  # its node is out of reach, the stream is not gone (see _each)
            self._forget(stream)  # the stream is gone
            return None
        ours = group_position(groups, self.config.group)
        if ours is None:
            await self._repair_groups([stream])
            return None
        # XLEN only when Redis cannot tell the lag (entries deleted past the group).
        lag = ours.lag if ours.lag is not None else ours.undelivered(await self.redis.xlen(stream))
        return lag, ours.pending, ours.shared

    async def _each(
        self, streams: Sequence[str], call: Callable[[str], Awaitable[Any]]
    ) -> list[Any]:
        """``call`` on every stream, at most 16 at a time (the client's connection pool is
        shared with the rest of the worker). On Cluster a stream whose node is out of
        reach answers None and is set aside (:meth:`_set_aside`); the others go on."""
        results: list[Any] = []
        for start in range(0, len(streams), 16):
            chunk = streams[start : start + 16]
            if not self.cluster:
                results += await asyncio.gather(*(call(s) for s in chunk))
                continue
            replies = await asyncio.gather(*(call(s) for s in chunk), return_exceptions=True)
            down: list[str] = []
            for stream, reply in zip(chunk, replies, strict=True):
                if not isinstance(reply, BaseException):
                    results.append(reply)
                    continue
                if not isinstance(reply, _NODE_DOWN_ERRORS):
                    raise reply
                down.append(stream)
                self._set_aside(stream, reply)
                results.append(None)
            if down:
                log.warning(
                    "outbox.streams_unreachable",
                    streams=len(down),
                    first=down[0],
                    error=self.stats.last_error,
                    retry_in_s=self.config.retry_max_s,
                )
        return results

    def _set_aside(self, stream: str, error: BaseException) -> None:
        """Leave a stream whose node is out of reach alone for ``retry_max_s``; what it
        had read or committed and not acknowledged is read again from its pending list."""
        self.stats.redis_failures += 1
        self.stats.last_error = f"redis: {stream}: {type(error).__name__}: {error}"
        state = self._streams.get(stream)
        if state is not None:
            state.cursor = "0-0"
            state.down_until = time.monotonic() + self.config.retry_max_s

    def _every_stream_sampled(self) -> bool:
        """Whether every known stream is reachable now and has figures."""
        reachable = self._reachable(time.monotonic())
        return len(reachable) == len(self._streams) and all(s in self.stats.lag for s in reachable)

    def _reachable(self, now: float) -> list[str]:
        """The streams not set aside at ``now``."""
        return [s for s, st in self._streams.items() if st.down_until <= now]

    # -- reading ----------------------------------------------------------------------

    async def _xreadgroup(
        self, cursors: dict[str, str], *, count: int, block_s: float | None
    ) -> list[tuple[str, list[Any]]]:
        try:
            reply = await self.redis.xreadgroup(
                self.config.group,
                self.config.consumer,
                # redis-py only reads the mapping (its dict type is invariant).
                cast("dict[KeyT, StreamIdT]", cursors),
                count=count,
                block=None if block_s is None else max(1, int(block_s * 1000)),
            )
        except redis.exceptions.ResponseError as error:
            if not str(error).startswith("NOGROUP"):
                raise
            await self._repair_groups(cursors)
            return []
        return _pairs(reply)

    async def _read_pending_and_persist(self) -> int:
        """Read this consumer's own pending entries (after a restart under the same name,
        and entries whose write failed) and persist them."""
        now = time.monotonic()
        due = {
            s: st.cursor
            for s, st in self._streams.items()
            if st.cursor != ">" and st.retry_at <= now and st.down_until <= now
        }
        if not due:
            return 0
        handled = 0
        for chunk in self._chunks(list(due)):
            cursors = {s: due[s] for s in chunk}
            replies = await self._read(cursors, count=self.config.batch_size, block_s=None)
            entries: list[OutboxEntry] = []
            for stream, raw in replies:
                state = self._streams.get(stream)
                if state is None:
                    continue
                if not raw:
                    state.cursor = ">"
                    continue
                state.cursor = _text(raw[-1][0])
                for raw_id, fields in raw:
                    entry = _entry(stream, raw_id, fields)
                    if entry is None:
                        await self._lost_pending(stream, _text(raw_id))
                    else:
                        entries.append(entry)
            # A stream that answered nothing at all has no pending list left either.
            answered = {s for s, _ in replies}
            for stream in chunk:
                if stream not in answered and stream in self._streams:
                    self._streams[stream].cursor = ">"
            await self._persist(entries)
            handled += len(entries)
        return handled

    async def _lost_pending(self, stream: str, entry_id: str) -> None:
        """A pending entry whose content is gone (deleted before it was acknowledged)."""
        self.stats.pending_deleted += 1
        log.error(
            "outbox.pending_entry_deleted",
            stream=stream,
            entry_id=entry_id,
            incident="an unacknowledged outbox entry was deleted: its event is lost",
        )
        await self.redis.xack(stream, self.config.group, entry_id)

    async def _read_new(self, *, block_s: float | None) -> list[OutboxEntry]:
        streams = self._reachable(time.monotonic())
        entries: list[OutboxEntry] = []
        chunks = self._chunks(streams)
        for chunk in chunks:
            # COUNT is per stream: a backlog in one stream is read a whole batch at a time
            # (what makes a drain fast); the entries are written batch_size per transaction.
            wait = block_s if len(chunks) == 1 and not self.cluster else None
            replies = await self._read(
                dict.fromkeys(chunk, ">"), count=self.config.batch_size, block_s=wait
            )
            for stream, raw in replies:
                for raw_id, fields in raw or []:
                    entry = _entry(stream, raw_id, fields)
                    if entry is not None:
                        entries.append(entry)
        if not entries and block_s is not None and (len(chunks) > 1 or self.cluster):
            await self._sleep(block_s)
        return entries

    def _chunks(self, streams: list[str]) -> list[list[str]]:
        size = 1 if self.cluster else self.config.streams_per_read
        return [streams[i : i + size] for i in range(0, len(streams), size)]

    async def _read(
        self, cursors: dict[str, str], *, count: int, block_s: float | None
    ) -> list[tuple[str, list[Any]]]:
        if not self.cluster:
            return await self._xreadgroup(cursors, count=count, block_s=block_s)
        replies = await self._each(
            list(cursors),
            lambda s: self._xreadgroup({s: cursors[s]}, count=count, block_s=None),
        )
        return [pair for reply in replies if reply is not None for pair in reply]

    async def _claim_and_persist(self) -> int:
        """XAUTOCLAIM entries idle on any consumer for claim_min_idle_s, and persist them."""
        now = time.monotonic()
        candidates = [s for s in self._reachable(now) if self.stats.pending.get(s, 1) > 0]
        handled = 0
        for stream in candidates:
            try:
                handled += await self._claim_stream(stream)
            except _NODE_DOWN_ERRORS as error:
                if not self.cluster:
                    raise
                self._set_aside(stream, error)
                log.warning("outbox.claim_failed", stream=stream, error=self.stats.last_error)
        return handled

    async def _claim_stream(self, stream: str) -> int:
        """XAUTOCLAIM one stream's idle entries and persist them; returns how many."""
        handled = 0
        start = "0-0"
        while True:
            try:
                reply = await self.redis.xautoclaim(
                    stream,
                    self.config.group,
                    self.config.consumer,
                    int(self.config.claim_min_idle_s * 1000),
                    start_id=start,
                    count=self.config.batch_size,
                )
            except redis.exceptions.ResponseError as error:
                if not str(error).startswith("NOGROUP"):
                    raise
                await self._repair_groups([stream])
                break
            next_id, claimed = _text(reply[0]), reply[1]
            deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
            if deleted:
                self.stats.autoclaim_deleted += len(deleted)
                log.error(
                    "outbox.autoclaim_deleted",
                    stream=stream,
                    entry_ids=deleted[:20],
                    count=len(deleted),
                    incident="pending outbox entries were deleted before they were "
                    "persisted: their events are lost",
                )
            entries = [e for e in (_entry(stream, i, f) for i, f in claimed) if e is not None]
            if entries:
                self.stats.autoclaimed += len(entries)
                log.info("outbox.autoclaimed", stream=stream, count=len(entries))
                await self._persist(entries)
                handled += len(entries)
            if next_id == "0-0":
                break
            start = next_id
        return handled

    # -- writing ----------------------------------------------------------------------

    async def _persist(self, entries: Sequence[OutboxEntry]) -> None:
        """Persist entries in batches of at most batch_size, then acknowledge them.

        Streams are spread over ``writers`` lanes (by a hash of the stream name) that
        write concurrently, each on its own connection; a stream's entries stay in one
        lane, in order. Lanes touch disjoint tags, so their transactions do not contend.
        """
        lanes: list[list[OutboxEntry]] = [[] for _ in range(self.config.writers)]
        for entry in entries:
            lanes[zlib.crc32(entry.stream.encode()) % len(lanes)].append(entry)
        busy = [lane for lane in lanes if lane]
        if len(busy) <= 1:
            for lane in busy:
                await self._persist_lane(lane)
            return
        results = await asyncio.gather(
            *(self._persist_lane(lane) for lane in busy), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _persist_lane(self, entries: Sequence[OutboxEntry]) -> None:
        size = self.config.batch_size
        for start in range(0, len(entries), size):
            await self._persist_batch(entries[start : start + size])

    async def _persist_batch(self, entries: Sequence[OutboxEntry]) -> None:
        tag_events: list[TagEvent] = []
        patient_events: list[PatientEvent] = []
        seen: set[tuple[str, str]] = set()
        seen_seq: set[tuple[str, int]] = set()
        later: list[OutboxEntry] = []
        for entry in entries:
            if (entry.stream, entry.entry_id) in seen:
                continue  # the same entry twice (own pending and a claim): once is enough
            seen.add((entry.stream, entry.entry_id))
            try:
                event = parse_entry(entry)
            except MalformedEntryError as error:
                await self._failed(entry, error)
                continue
            if isinstance(event, PatientEvent):
                patient_events.append(event)
            elif (event.tag, event.seq) in seen_seq:
                later.append(entry)  # two entries with one (tag, seq): one per transaction
            else:
                seen_seq.add((event.tag, event.seq))
                tag_events.append(event)
        if tag_events or patient_events:
            await self._write(tag_events, patient_events)
        if later:
            await self._persist_batch(later)

    async def _write(
        self, tag_events: Sequence[TagEvent], patient_events: Sequence[PatientEvent]
    ) -> None:
        """Write one batch (retried until it commits); on an error in the data, retry
        entry by entry to find the poison one."""
        try:
            outcome, elapsed = await self._commit(tag_events, patient_events)
        except _PoisonError as poison:
            size = len(tag_events) + len(patient_events)
            if size == 1:
                only = tag_events[0].entry if tag_events else patient_events[0].entry
                await self._failed(only, poison.cause)
                return
            log.warning("outbox.batch_refused", size=size, error=str(poison.cause))
            for event in tag_events:
                await self._write([event], [])
            for patient_event in patient_events:
                await self._write([], [patient_event])
            return
        size = len(tag_events) + len(patient_events)
        # last_commit_at last: observers (metrics) read the batch figures when it changes.
        self.stats.batches += 1
        self.stats.last_batch_size = size
        self.stats.last_batch_latency_s = elapsed
        self.stats.events_persisted += len(outcome.applied)
        self.stats.duplicates += len(outcome.duplicates)
        self.stats.patient_events += len(outcome.patient_events)
        self.stats.last_commit_at = time.time()
        # Events counted once, here, where they are recorded (whichever process made them).
        metrics.observe_events(outcome.applied)
        for event in outcome.applied:
            if event.type in _BOOKING_EVENTS:
                # The API's request id rides on the event ("rid"), so this line joins the
                # request's own log lines in a search by request id.
                log.info(
                    "outbox.booking_recorded",
                    request_id=event.payload.get("rid") or None,
                    type=event.type,
                    hold=event.payload.get("hold"),
                    tag=event.tag,
                    seq=event.seq,
                )
        unacked = await self._diverged(outcome)
        done = [e.entry for e in tag_events if (e.entry.stream, e.entry.entry_id) not in unacked]
        done += [e.entry for e in patient_events]
        await self._ack(done)

    async def _commit(
        self, tag_events: Sequence[TagEvent], patient_events: Sequence[PatientEvent]
    ) -> tuple[BatchOutcome, float]:
        """One transaction, retried with back-off until it commits, the stop event is
        set (:class:`_Stopped`), or the data is refused (:class:`_PoisonError`). Returns
        the outcome and the seconds the attempt that committed took."""
        while True:
            started = time.perf_counter()
            try:
                with database_errors():
                    async with (
                        acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as conn,
                        conn.transaction(),
                    ):
                        outcome = await write_batch(conn, tag_events, patient_events)
            except Exception as error:
                if _is_poison_error(error):
                    raise _PoisonError(error) from error
                await self._db_failed(error)
                continue
            elapsed = time.perf_counter() - started
            self._db_recovered()
            self._crash_hook()
            return outcome, elapsed

    async def _db_failed(self, error: BaseException) -> None:
        self.stats.db_failures += 1
        self.stats.db_available = False
        self.stats.last_error = f"postgres: {type(error).__name__}: {error}"
        if isinstance(error, DatabaseUnavailableError | DatabaseBusyError | ConcurrentWriteError):
            log.warning("outbox.write_retry", error=self.stats.last_error)
        else:
            log.error("outbox.write_failed", error=self.stats.last_error, exc_info=error)
        if self._stop.is_set():
            raise _Stopped
        await self._sleep(self._db_backoff.next_delay())
        if self._stop.is_set():
            raise _Stopped
        if time.monotonic() >= self._next_sample:
            # Keep lag and pending current for /readyz while Postgres is away.
            with contextlib.suppress(redis.exceptions.RedisError):
                await self.sample()

    def _db_recovered(self) -> None:
        if not self.stats.db_available:
            log.info("outbox.write_recovered", failures=self.stats.db_failures)
        self.stats.db_available = True
        self._db_backoff.reset()

    def _crash_hook(self) -> None:
        probability = self.config.crash_after_commit
        if probability > 0 and random.random() < probability:
            log.warning("outbox.crash_hook_fired", note="test-only exit after commit")
            os._exit(137)

    async def _diverged(self, outcome: BatchOutcome) -> set[tuple[str, str]]:
        """Count diverged events and fence their tags; returns the (stream, entry id)s to
        leave unacknowledged because fencing failed (they are tried again)."""
        if not outcome.diverged:
            return set()
        self.stats.diverged += len(outcome.diverged)
        by_tag: dict[str, list[TagEvent]] = {}
        for event, stored in outcome.diverged:
            by_tag.setdefault(event.tag, []).append(event)
            log.error(
                "outbox.diverged",
                tag=event.tag,
                seq=event.seq,
                stream_id=event.entry.entry_id,
                stored_stream_id=stored,
                incident="Redis's history of this tag is not the one Postgres recorded",
            )
        unacked: set[tuple[str, str]] = set()
        for tag, events in by_tag.items():
            if self.on_diverged is None:
                continue
            try:
                result = self.on_diverged(tag)
                if inspect.isawaitable(result):
                    await result
            except Exception as error:
                log.error("outbox.fence_failed", tag=tag, error=f"{type(error).__name__}: {error}")
                for event in events:
                    unacked.add((event.entry.stream, event.entry.entry_id))
                    self._retry_later(event.entry.stream)
        return unacked

    async def _failed(self, entry: OutboxEntry, error: BaseException) -> None:
        """An entry that failed on its own: dead-letter it once delivered max_attempts
        times, else leave it pending and read it again after poison_retry_s."""
        deliveries = await self._deliveries(entry)
        if deliveries is None:
            return  # not pending any more: acknowledged meanwhile by another consumer
        reason = f"{type(error).__name__}: {error}"
        if deliveries < self.config.max_attempts:
            log.warning(
                "outbox.entry_failed",
                stream=entry.stream,
                entry_id=entry.entry_id,
                deliveries=deliveries,
                max_attempts=self.config.max_attempts,
                error=reason,
            )
            self._retry_later(entry.stream)
            return
        while True:
            try:
                with database_errors():
                    async with (
                        acquire(self.pool, timeout_s=self.config.acquire_timeout_s) as conn,
                        conn.transaction(),
                    ):
                        await record_dead_letter(conn, entry, reason)
            except Exception as db_error:
                await self._db_failed(db_error)
                continue
            break
        self._db_recovered()
        self.stats.dead_letters += 1
        log.error(
            "outbox.dead_letter",
            stream=entry.stream,
            entry_id=entry.entry_id,
            deliveries=deliveries,
            error=reason,
        )
        await self._ack([entry])

    def _retry_later(self, stream: str) -> None:
        state = self._streams.get(stream)
        if state is not None:
            state.cursor = "0-0"
            state.retry_at = time.monotonic() + self.config.poison_retry_s

    async def _deliveries(self, entry: OutboxEntry) -> int | None:
        rows = await self.redis.xpending_range(
            entry.stream, self.config.group, min=entry.entry_id, max=entry.entry_id, count=1
        )
        if not rows:
            return None
        return int(rows[0]["times_delivered"])

    async def _ack(self, entries: Sequence[OutboxEntry]) -> None:
        """XACK then XDEL (unless another group reads the stream), stream by stream."""
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        if not by_stream:
            return

        async def ack(stream: str) -> None:
            ids = by_stream[stream]
            state = self._streams.get(stream)
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(stream, self.config.group, *ids)
            if state is None or not state.shared:
                pipe.xdel(stream, *ids)
            await pipe.execute()

        if self.cluster:
            await self._each(list(by_stream), ack)
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            state = self._streams.get(stream)
            pipe.xack(stream, self.config.group, *ids)
            if state is None or not state.shared:
                pipe.xdel(stream, *ids)
        await pipe.execute()

    def _summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "events_persisted": s.events_persisted,
            "duplicates": s.duplicates,
            "diverged": s.diverged,
            "dead_letters": s.dead_letters,
            "autoclaimed": s.autoclaimed,
            "autoclaim_deleted": s.autoclaim_deleted,
            "db_failures": s.db_failures,
        }


class _PoisonError(Exception):
    """A batch refused for a reason in its data; ``cause`` is the original error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: Events of a paid booking, logged one line each (bounded by capacity, unlike holds).
_BOOKING_EVENTS = frozenset({"booking_confirmed", "booking_cancelled", "booking_rescheduled"})


async def run_persister(
    redis: RedisClient,
    pool: asyncpg.Pool,
    *,
    stop: asyncio.Event,
    on_diverged: DivergedHook | None = None,
    config: PersisterConfig | None = None,
    stats: PersisterStats | None = None,
) -> None:
    """Run the persister until ``stop`` is set (the worker's entry point).

    ``on_diverged(tag)`` is called (and awaited if it returns an awaitable) for every
    tag whose Redis history diverged from Postgres's; pass the fence. ``stats`` is
    updated in place for metrics and /readyz.
    """
    persister = Persister(redis, pool, config=config, stats=stats, on_diverged=on_diverged)
    await persister.run(stop)
