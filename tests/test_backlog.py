"""The outbox backlog as the API's /readyz measures it (inventory/store/backlog.py): lag and
pending per consumer group, the oldest entry waiting, the verdict, and the cache that
bounds how often and how long a probe measures."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import start_redis
from inventory.ops.config import ConfigError, Settings
from inventory.record.persister import GROUP
from inventory.store.backlog import (
    BacklogCache,
    OutboxBacklog,
    group_position,
    measure_backlog,
    outbox_verdict,
    stale_remark,
)


@pytest.fixture
async def redis(redis_server: Any) -> AsyncIterator[Redis]:
    """A client of the session's Redis."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def streams(redis: Redis) -> AsyncIterator[list[str]]:
    """Four stream names of this test's own (outside the outbox pattern, so no
    persister of another test reads them), deleted afterwards."""
    prefix = f"test-backlog:{{{uuid.uuid4().hex[:12]}}}"
    names = [f"{prefix}:{name}" for name in ("fresh", "read", "done", "missing")]
    try:
        yield names
    finally:
        await redis.delete(*names)


async def _now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_measures_lag_pending_and_the_oldest_entry(redis: Redis, streams: list[str]) -> None:
    """A stream the persister has not joined counts whole; a joined one counts its
    undelivered and pending entries; a drained one and a missing one count nothing; the
    oldest waiting entry's age comes from its id on Redis's clock."""
    fresh, read, done, missing = streams
    now = await _now_ms(redis)
    await redis.xadd(fresh, {"type": "x"}, id=f"{now - 41_000}-0")
    await redis.xadd(fresh, {"type": "x"}, id=f"{now - 40_000}-0")
    for _ in range(3):
        await redis.xadd(read, {"type": "x"})
    await redis.xgroup_create(read, GROUP, id="0")
    await redis.xreadgroup(GROUP, "c1", {read: ">"}, count=1)  # 1 pending, 2 undelivered
    await redis.xadd(done, {"type": "x"})
    await redis.xgroup_create(done, GROUP, id="0")
    for _, entries in await redis.xreadgroup(GROUP, "c1", {done: ">"}):
        ids = [entry_id for entry_id, _ in entries]
        await redis.xack(done, GROUP, *ids)
        await redis.xdel(done, *ids)

    backlog = await measure_backlog(redis, group=GROUP, streams=streams)

    assert (backlog.streams, backlog.lag, backlog.pending) == (3, 4, 1)
    assert backlog.entries == 5
    assert backlog.oldest_age_s is not None
    assert 41 <= backlog.oldest_age_s < 45
    assert await measure_backlog(redis, group=GROUP, streams=[done, missing]) == OutboxBacklog(
        streams=1
    )


async def test_a_shared_stream_counts_only_what_the_persister_has_not_done(
    redis: Redis, streams: list[str]
) -> None:
    """On a stream another group also reads, acknowledged entries stay (no XDEL): the
    backlog is the group's lag, and the oldest waiting entry the first one after what it
    was delivered, not the stream's first."""
    stream = streams[0]
    now = await _now_ms(redis)
    for age_s in (90, 60, 30, 20):
        await redis.xadd(stream, {"type": "x"}, id=f"{now - age_s * 1000}-0")
    await redis.xgroup_create(stream, GROUP, id="0")
    await redis.xgroup_create(stream, "audit", id="0")
    for _, entries in await redis.xreadgroup(GROUP, "c1", {stream: ">"}, count=2):
        await redis.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])

    backlog = await measure_backlog(redis, group=GROUP, streams=[stream])

    assert (backlog.lag, backlog.pending) == (2, 0)
    assert backlog.oldest_age_s is not None
    assert 30 <= backlog.oldest_age_s < 34


def test_group_position_falls_back_on_the_length_when_redis_cannot_tell_the_lag() -> None:
    """Without a lag in XINFO GROUPS, what is not pending of the stream's length is
    undelivered; another group makes the stream shared; no group of ours: None."""
    ours = {"name": GROUP, "pending": 2, "last-delivered-id": "5-0", "lag": None}
    position = group_position([ours, {"name": "audit"}], GROUP)
    assert position is not None
    assert (position.pending, position.lag, position.shared) == (2, None, True)
    assert position.undelivered(7) == 5
    assert position.undelivered(1) == 0
    assert group_position([{"name": "audit"}], GROUP) is None


def test_the_verdict_says_how_far_behind() -> None:
    """Within the bound: ok; past it: the entries waiting, the oldest's age if known, the
    bound."""
    assert outbox_verdict(50_000, 50_000, 12.0) == "ok"
    assert (
        outbox_verdict(73_000, 50_000, 41.2)
        == "lagging: 73000 entries waiting, oldest 41 s (bound 50000)"
    )
    assert outbox_verdict(3, 2) == "lagging: 3 entries waiting (bound 2)"


def test_the_bound_is_a_setting() -> None:
    """INVENTORY_READY_MAX_OUTBOX_BACKLOG sets the bound (default 50000); it must be a
    positive integer."""
    assert Settings.from_env({}, for_api=False).ready_max_outbox_backlog == 50_000
    env = {"INVENTORY_READY_MAX_OUTBOX_BACKLOG": "2"}
    assert Settings.from_env(env, for_api=False).ready_max_outbox_backlog == 2
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="READY_MAX_OUTBOX_BACKLOG"):
            Settings.from_env({"INVENTORY_READY_MAX_OUTBOX_BACKLOG": bad}, for_api=False)


async def test_the_cache_measures_once_for_concurrent_probes_and_reuses_the_figure() -> None:
    """Concurrent probes share one measurement; a figure younger than max_age_s is reused;
    an older one is measured again."""
    calls: list[int] = []

    async def measure() -> OutboxBacklog:
        calls.append(1)
        await asyncio.sleep(0.05)
        return OutboxBacklog(streams=1, lag=len(calls))

    cache = BacklogCache(max_age_s=0.2)
    figures = await asyncio.gather(*(cache.get(measure, timeout_s=1) for _ in range(5)))
    assert {f.lag for f in figures} == {1}
    assert (await cache.get(measure, timeout_s=1)).lag == 1
    await asyncio.sleep(0.25)
    assert (await cache.get(measure, timeout_s=1)).lag == 2
    assert len(calls) == 2


async def test_a_slow_measurement_is_bounded_and_serves_the_next_probe() -> None:
    """A probe waits at most timeout_s: with no figure yet it times out, the measurement
    goes on and answers the next probe; later, while a measurement is slow, the previous
    figure answers; a failed measurement's error reaches the probe."""
    release = asyncio.Event()
    figure = OutboxBacklog(streams=1, lag=7)

    async def slow() -> OutboxBacklog:
        await release.wait()
        return figure

    cache = BacklogCache(max_age_s=0.0)
    with pytest.raises(TimeoutError):
        await cache.get(slow, timeout_s=0.05)
    release.set()
    assert await cache.get(slow, timeout_s=1) == figure
    release.clear()
    assert await cache.get(slow, timeout_s=0.05) == figure  # stale, but recent enough
    release.set()

    async def failing() -> OutboxBacklog:
        raise ConnectionError("Redis gone")

    await asyncio.sleep(0.01)  # the slow one finishes
    with pytest.raises(ConnectionError, match="Redis gone"):
        await cache.get(failing, timeout_s=1)


async def test_a_measurement_failing_after_its_probe_gave_up_is_not_an_unretrieved_error(
    tmp_path: Path,
) -> None:
    """Redis down: a measurement that fails after its probe stopped waiting is taken by
    the cache, not left to asyncio's "Task exception was never retrieved" (an error-level
    traceback at every probe of an outage)."""
    server = start_redis(tmp_path, appendonly=False)
    client = Redis.from_url(server.url, decode_responses=True, socket_connect_timeout=1)
    server.stop()  # a real server that is gone: connections are refused
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        cache = BacklogCache(max_age_s=0.0)
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await cache.get(lambda: measure_backlog(client, group=GROUP), timeout_s=0)
            measuring = cache._task
            assert measuring is not None
            # Let the measurement fail on its own (asyncio.wait does not take its error).
            await asyncio.wait([measuring])
            del measuring
        gc.collect()  # a task's unretrieved error is reported when the task is freed
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        await client.aclose()
    assert unhandled == []


async def test_a_stale_figure_is_served_with_its_age() -> None:
    """While a slow measurement goes on, the previous figure answers with how old it is,
    never passed off as current; a fresh figure carries no remark."""
    release = asyncio.Event()
    figure = OutboxBacklog(streams=1, lag=3)

    async def slow() -> OutboxBacklog:
        await release.wait()
        return figure

    cache = BacklogCache(max_age_s=0.0)
    assert stale_remark(cache.age_s(), 0.5) == ""  # nothing measured yet
    release.set()
    await cache.get(slow, timeout_s=1)
    assert stale_remark(cache.age_s(), 0.5) == ""
    release.clear()
    await asyncio.sleep(0.6)
    assert await cache.get(slow, timeout_s=0.05) == figure  # served from the last one
    remark = stale_remark(cache.age_s(), 0.5)
    assert remark.startswith(" (as measured ")
    assert remark.endswith(" s ago: measuring is slow)")
    assert outbox_verdict(figure.entries, 10).startswith("ok")
    release.set()
    await asyncio.sleep(0.01)
