"""The outbox backlog: entries written by the scripts and not yet persisted to Postgres.

Both readiness probes judge it with :func:`outbox_verdict` against one bound
(``INVENTORY_READY_MAX_OUTBOX_BACKLOG``). The worker reads it from its persister's stats;
the API, which runs no persister, measures it from Redis with :func:`measure_backlog`:
the outbox streams of the registered department-day tags (``inv:tags``, no SCAN),
:data:`TAGS_PER_ROUND_TRIP` streams per pipelined round trip, XINFO GROUPS and XLEN
for each, then XPENDING or XRANGE for the streams that have a backlog, to find the
oldest entry waiting. Patient tags' streams (ban decisions, rare) are not registered
anywhere and are not counted here. :class:`BacklogCache` keeps the API's probes cheap
and bounded in time: one measurement at most every :data:`BACKLOG_MAX_AGE_S`, shared.

:func:`group_position` reads a consumer group's place in a stream out of XINFO GROUPS,
for the persister's own sampling and for the measurement alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.exceptions
import structlog

from inventory.store import keys
from inventory.store.connection import RedisClient

log = structlog.get_logger(__name__)

#: Tags (streams) read per pipelined round trip, by the sampler and the measurement.
TAGS_PER_ROUND_TRIP: Final = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class GroupPosition:
    """One consumer group's place in one stream, from XINFO GROUPS."""

    #: Entries delivered to the group and not yet acknowledged.
    pending: int
    #: Entries not yet delivered to the group; None when Redis cannot tell (entries
    #: were deleted past the group's position).
    lag: int | None
    last_delivered_id: str
    #: Another consumer group reads the stream too.
    shared: bool

    def undelivered(self, length: int) -> int:
        """The lag, or when Redis cannot tell it, what ``length`` (XLEN) leaves after the
        pending entries: acknowledged entries are deleted (unless the stream is shared)."""
        if self.lag is not None:
            return self.lag
        return max(0, length - self.pending)


def group_position(groups: Sequence[Mapping[str, Any]], group: str) -> GroupPosition | None:
    """``group``'s position in XINFO GROUPS's reply; None if the stream has no such group."""
    for found in groups:
        if _text(found.get("name")) == group:
            lag = found.get("lag")
            return GroupPosition(
                pending=int(found.get("pending") or 0),
                lag=None if lag is None else int(lag),
                last_delivered_id=_text(found.get("last-delivered-id") or "0-0"),
                shared=len(groups) > 1,
            )
    return None


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """What one measurement of the outbox streams found."""

    #: Streams that exist among those looked at.
    streams: int = 0
    #: Entries not yet delivered to the persister's group (all of a stream's entries
    #: when the group is not there yet).
    lag: int = 0
    #: Entries delivered and not yet acknowledged.
    pending: int = 0
    #: Age of the oldest entry waiting (Redis's clock), None when nothing waits.
    oldest_age_s: float | None = None

    @property
    def entries(self) -> int:
        """Entries waiting for the persister: lag plus pending."""
        return self.lag + self.pending


def outbox_verdict(entries: int, bound: int, oldest_age_s: float | None = None) -> str:
    """The "outbox" check of a /readyz body: "ok", or how far behind it is."""
    if entries <= bound:
        return "ok"
    oldest = "" if oldest_age_s is None else f", oldest {oldest_age_s:.0f} s"
    return f"lagging: {entries} entries waiting{oldest} (bound {bound})"


def stale_remark(age_s: float | None, fresh_for_s: float) -> str:
    """What a readiness check appends to a backlog figure older than ``fresh_for_s``
    (served while a slow measurement goes on): its age, so it is never passed off as
    current. "" for a fresh figure."""
    if age_s is None or age_s <= fresh_for_s:
        return ""
    return f" (as measured {age_s:.0f} s ago: measuring is slow)"


def _id_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


async def registered_streams(client: RedisClient) -> list[str]:
    """The outbox stream of every registered department-day tag."""
    tags = await client.smembers(keys.TAG_REGISTRY_KEY)
    return sorted(keys.tag_keys(_text(tag)).outbox for tag in tags)


async def _redis_now_ms(client: RedisClient) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def measure_backlog(
    client: RedisClient, *, group: str, streams: Sequence[str] | None = None
) -> OutboxBacklog:
    """Measure the backlog of ``streams`` (default: :func:`registered_streams`) for the
    consumer ``group``. Redis errors other than a missing stream propagate."""
    if streams is None:
        streams = await registered_streams(client)
    now_ms = await _redis_now_ms(client)
    found = lag = pending = 0
    oldest_ms: int | None = None
    for start in range(0, len(streams), TAGS_PER_ROUND_TRIP):
        chunk = streams[start : start + TAGS_PER_ROUND_TRIP]
        pipe = client.pipeline(transaction=False)
        for stream in chunk:
            pipe.xinfo_groups(stream)
            pipe.xlen(stream)
        replies = await pipe.execute(raise_on_error=False)
        behind = client.pipeline(transaction=False)
        asked: list[str] = []
        for i, stream in enumerate(chunk):
            groups, length = replies[2 * i], replies[2 * i + 1]
            if isinstance(groups, redis.exceptions.ResponseError):
                continue  # no such stream: nothing written since the tag's last rebuild
            if isinstance(groups, BaseException):
                raise groups
            found += 1
            position = group_position(groups, group)
            if position is None:  # the persister has not joined it yet: all of it waits
                lag += int(length)
                if length:
                    behind.xrange(stream, min="-", max="+", count=1)
                    asked.append("range")
                continue
            lag += position.undelivered(int(length))
            pending += position.pending
            if position.pending:  # pending entries come before the undelivered ones
                behind.xpending(stream, group)
                asked.append("pending")
            elif position.undelivered(int(length)):
                behind.xrange(stream, min="(" + position.last_delivered_id, max="+", count=1)
                asked.append("range")
        if not asked:
            continue
        for kind, reply in zip(asked, await behind.execute(raise_on_error=False), strict=True):
            if isinstance(reply, redis.exceptions.ResponseError):
                continue  # the stream or group went away between the two round trips
            if isinstance(reply, BaseException):
                raise reply
            first = reply.get("min") if kind == "pending" else (reply[0][0] if reply else None)
            if first:
                first_ms = _id_ms(_text(first))
                oldest_ms = first_ms if oldest_ms is None else min(oldest_ms, first_ms)
    age_s = None if oldest_ms is None else max(0.0, (now_ms - oldest_ms) / 1000)
    return OutboxBacklog(streams=found, lag=lag, pending=pending, oldest_age_s=age_s)


#: How long the API reuses a measurement before it measures again.
BACKLOG_MAX_AGE_S: Final = 2.0
#: A measurement that takes longer than this fails (Redis socket timeouts aside).
MEASURE_TIMEOUT_S: Final = 10.0
#: While a measurement outlasts a probe's wait, the last figure answers if younger than this.
STALE_LIMIT_S: Final = 30.0


class BacklogCache:
    """The last measurement, refreshed at most every ``max_age_s``.

    Concurrent callers share one measurement. One that outlasts a caller's wait goes on
    (bounded by :data:`MEASURE_TIMEOUT_S`) and serves the callers after it; meanwhile the
    previous figure answers while younger than :data:`STALE_LIMIT_S`, so a slow Redis
    does not make readiness flap. Per process and per event loop.
    """

    def __init__(self, *, max_age_s: float = BACKLOG_MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._figure: OutboxBacklog | None = None
        self._measured_at = 0.0
        self._task: asyncio.Task[OutboxBacklog] | None = None

    async def get(
        self, measure: Callable[[], Awaitable[OutboxBacklog]], *, timeout_s: float
    ) -> OutboxBacklog:
        """The figure, measured by ``measure`` when the last one is older than
        ``max_age_s``; waits at most ``timeout_s`` (then TimeoutError, unless a recent
        enough figure can answer). A failed measurement's error propagates."""
        now = time.monotonic()
        if self._figure is not None and now - self._measured_at < self.max_age_s:
            return self._figure
        if self._task is None:
            self._task = asyncio.create_task(self._measure(measure))
            self._task.add_done_callback(_settled)
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            if self._figure is not None and now - self._measured_at < STALE_LIMIT_S:
                return self._figure
            raise

    def age_s(self) -> float | None:
        """Seconds since the figure :meth:`get` answers with was measured (None: never)."""
        return None if self._figure is None else time.monotonic() - self._measured_at

    async def _measure(self, measure: Callable[[], Awaitable[OutboxBacklog]]) -> OutboxBacklog:
        try:
            figure = await asyncio.wait_for(measure(), MEASURE_TIMEOUT_S)
        finally:
            self._task = None
        self._figure, self._measured_at = figure, time.monotonic()
        return figure


def _settled(task: asyncio.Task[OutboxBacklog]) -> None:
    """Take a finished measurement's error. Without this, a measurement that failed
    after every probe waiting for it had timed out (Redis unreachable: the usual case in
    an outage) was reported by asyncio as "Task exception was never retrieved", at
    error level with a traceback, once per probe: the probes report the outage already."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.info("outbox.backlog_measure_failed", error=f"{type(error).__name__}: {error}")
