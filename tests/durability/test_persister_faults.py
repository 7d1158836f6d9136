"""The persister as a real process under faults (research/reliability.md G6, G8): SIGKILLed
at random points, also between its commit and its XACK, and Postgres SIGKILLed and kept
down, all while store steps keep coming. Nothing may be lost or applied twice."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from pathlib import Path

import pytest
import redis.exceptions

from inventory.devtools.servers import PostgresServer, RedisServer
from inventory.record.migrate import migrate_database
from inventory.record.persister import Persister, PersisterConfig, PersisterStats

from .outbox_world import (
    Load,
    World,
    check_persisted,
    log_events,
    open_world,
    outbox_backlog,
    start_persister,
    stop_persister,
    wait_caught_up,
)

pytestmark = pytest.mark.slow


async def test_persister_killed_at_random_points_loses_nothing(
    private_redis: RedisServer, database: str, tmp_path: Path
) -> None:
    """Five SIGKILLs of `inventory persist` at random moments, plus exits forced right
    after a commit and before its XACK, under steady store steps: every event is in
    Postgres exactly once, no entry is left pending, none was deleted unacknowledged."""
    rng = random.Random(20261125)
    log_path = tmp_path / "persist.log"
    async with open_world(private_redis.url, database, tags=3) as world:
        load = Load(world, seed=rng.randrange(2**32))
        load_task = asyncio.create_task(load.run_for(20.0, rate_per_s=400))
        started = time.monotonic()
        kill_at = sorted(rng.uniform(1.0, 18.0) for _ in range(5))
        kills = crash_exits = starts = 0
        process: subprocess.Popen[bytes] | None = None
        while time.monotonic() - started < 19.0:
            if process is None or process.poll() is not None:
                if process is not None:
                    crash_exits += 1  # the commit/XACK hook fired
                # Every other start keeps its consumer name: it finds its own pending
                # entries; the others leave theirs to be taken over by XAUTOCLAIM.
                process = start_persister(
                    world,
                    log_path,
                    crash_after_commit=0.05,
                    consumer="steady" if starts % 2 else None,
                )
                starts += 1
            if kill_at and time.monotonic() - started >= kill_at[0]:
                kill_at.pop(0)
                process.kill()
                process.wait()
                kills += 1
                process = None
                await asyncio.sleep(rng.uniform(0, 0.5))
                continue
            await asyncio.sleep(0.1)
        report = await load_task
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
            kills += 1
        # A last persister, without the crash hook, drains what is left.
        final = start_persister(world, log_path)
        try:
            drained_s = await wait_caught_up(world, timeout_s=30)
        finally:
            status = stop_persister(final)
        assert status == 0
        assert report.errors == []
        figures = await check_persisted(world)
    deleted = log_events(log_path, "outbox.autoclaim_deleted")
    lost_pending = log_events(log_path, "outbox.pending_entry_deleted")
    hook_fired = log_events(log_path, "outbox.crash_hook_fired")
    print(
        f"\nG8 persister kill: {report.steps} steps, {figures['events']} events, "
        f"{kills} SIGKILLs, {hook_fired} exits between commit and XACK ({crash_exits} seen), "
        f"{starts + 1} starts, drained {drained_s:.1f} s after the last kill; "
        f"0 lost, 0 duplicates, XAUTOCLAIM deleted {deleted}"
    )
    assert kills >= 5
    assert hook_fired >= 1
    assert log_events(log_path, "outbox.autoclaimed") >= 1
    assert deleted == 0
    assert lost_pending == 0


async def test_postgres_outage_under_load_drains_after_restart(
    private_redis: RedisServer, private_postgres: PostgresServer, tmp_path: Path
) -> None:
    """Postgres SIGKILLed and kept down for 12 s under 300 steps/s: the store keeps
    answering, the persister keeps running, and after the restart the backlog drains with
    every event once."""
    database_url = private_postgres.create_database("outage")
    await migrate_database(database_url)
    log_path = tmp_path / "persist.log"
    outage_s, rate = 12.0, 300.0
    async with open_world(private_redis.url, database_url) as world:
        process = start_persister(world, log_path)
        try:
            load = Load(world, seed=99)
            await load.run_for(2.0, rate_per_s=rate)
            await wait_caught_up(world, timeout_s=10)
            private_postgres.kill()
            down_at = time.monotonic()
            await load.run_for(outage_s, rate_per_s=rate)
            backlog = sum(await outbox_backlog(world))
            assert process.poll() is None, "the persister died while Postgres was down"
            await asyncio.to_thread(private_postgres.restart)
            up_at = time.monotonic()
            await world.pool.expire_connections()
            # The load goes on while the backlog drains.
            drain = asyncio.create_task(_drained(world, threshold=int(rate)))
            load_more = asyncio.create_task(load.run_for(8.0, rate_per_s=rate))
            drain_s = await asyncio.wait_for(drain, timeout=30)
            await load_more
            await wait_caught_up(world, timeout_s=15)
            assert process.poll() is None
        finally:
            status = stop_persister(process)
        assert status == 0
        assert load.report.errors == [], load.report.errors[:3]
        figures = await check_persisted(world)
    ratio = drain_s / outage_s
    print(
        f"\nG6 Postgres outage: down {up_at - down_at:.1f} s at {rate:.0f} steps/s, backlog "
        f"{backlog} entries, drained {drain_s:.2f} s after restart (ratio {ratio:.2f}); "
        f"{figures['events']} events, 0 lost, 0 duplicates, store errors 0"
    )
    assert backlog > rate * outage_s * 0.5
    assert log_events(log_path, "outbox.write_retry") >= 1
    assert log_events(log_path, "outbox.write_recovered") >= 1


async def _drained(world: World, *, threshold: int) -> float:
    """Seconds until the backlog is below ``threshold`` entries (load still running)."""
    started = time.monotonic()
    while True:
        if sum(await outbox_backlog(world)) <= threshold:
            return time.monotonic() - started
        await asyncio.sleep(0.05)


async def test_redis_restart_under_the_persister_loses_nothing(
    private_redis: RedisServer, database: str
) -> None:
    """Redis SIGKILLed and restarted from its append-only file while the persister runs:
    the loop survives, rereads what it had not acknowledged, and every event lands once."""
    async with open_world(private_redis.url, database) as world:
        stats = PersisterStats()
        config = PersisterConfig(
            match=world.stream_patterns, block_s=0.1, retry_max_s=0.3, claim_min_idle_s=1
        )
        stop = asyncio.Event()
        task = asyncio.create_task(
            Persister(world.client, world.pool, config=config, stats=stats).run(stop)
        )
        try:
            load = Load(world, seed=17)
            await load.run_for(1.5, rate_per_s=400)
            private_redis.kill()
            await asyncio.sleep(1.0)
            assert not task.done()
            await asyncio.to_thread(private_redis.restart)
            # Pooled connections died with the server: the first command on each fails
            # once (a 503 to that caller) and the pool reconnects. Close them all here
            # (the persister shares this client: it must cope), not inside the load whose
            # every step must succeed. (Pinging in a loop refreshed only one: the pool
            # hands out its most recently returned connection again.)
            await world.client.connection_pool.disconnect()
            with contextlib.suppress(redis.exceptions.ConnectionError):
                await world.client.ping()
            await load.run_for(1.5, rate_per_s=400)
            await wait_caught_up(world, timeout_s=15)
        finally:
            stop.set()
            await task
        assert load.report.errors == []
        assert stats.redis_failures >= 1
        await check_persisted(world)
