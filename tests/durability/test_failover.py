"""Redis losing acknowledged writes for real, under a release storm, end to end.

Two faults, each with an API process and a worker process running and patients
reserving, confirming and releasing through HTTP:

* a Sentinel failover: ``kill -9`` of the primary after its replica missed some writes;
* a Redis restart without its append-only file (the empty store).

Each shows the fence at work (tags behind Postgres refuse changes with ``store_fenced``),
``inventory rebuild --fenced`` restoring them, 0 paid bookings lost, 0 units sold twice
(Postgres bookings against capacity, and ``inventory check``), and prints how long
patients saw which 503 (run with ``-s`` to read it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from inventory.devtools.servers import (
    RedisSentinelServers,
    RedisServer,
    start_redis_sentinel,
)
from inventory.store import keys
from tests.databases import Databases

from .storm import (
    Stack,
    Storm,
    booked_per_slot,
    confirmed_in_postgres,
    print_windows,
    refusal_windows,
    running_stack,
    seed,
    tag_sequences,
)

pytestmark = pytest.mark.slow

HOSPITALS = 3
# Enough units and patients that the storm is still selling when the fault strikes (on a
# quiet machine a smaller storm sold out before it, and then no write was lost).
CAPACITIES = [8, 8, 8, 8]
PATIENTS = 160


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[RedisSentinelServers]:
    """A primary, a replica and three Sentinels of this test's own."""
    # The Sentinels find each other while the stack starts; the test waits before the kill.
    with start_redis_sentinel(tmp_path / "sentinel", down_after_ms=1000, wait=False) as group:
        yield group


def fenced_tags(redis_url: str, tags: set[str]) -> set[str]:
    """The tags whose meta says fenced, on the server at ``redis_url``."""
    with Redis.from_url(redis_url, decode_responses=True) as client:
        return {t for t in tags if client.hget(keys.tag_keys(t).meta, "fenced") == "1"}


async def wait_until(predicate: Any, limit_s: float, what: str) -> float:
    """Poll ``predicate()`` (sync) every 50 ms; the time it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def finish_and_verify(
    stack: Stack,
    storm: Storm,
    storm_task: asyncio.Task[None],
    all_slots: dict[str, str],
    capacity: dict[str, int],
    data_url: str,
    fault_at: float,
    title: str,
) -> None:
    """Wait for the fence, check a fenced tag refuses changes, rebuild, sell on, stop,
    and check 0 lost and 0 oversold; print the refusal windows."""
    tags = set(all_slots.values())
    # The fence has run once a fenced tag says so.
    await wait_until(
        lambda: any(a.at > fault_at and a.code == "store_fenced" for a in storm.answers),
        30,
        "the fence after the fault",
    )
    await asyncio.sleep(1.0)  # the storm keeps running against the fenced tags
    fenced = fenced_tags(data_url, tags)
    assert fenced, "no tag was fenced although writes were lost"
    # Every tag whose Redis sequence is below Postgres's is fenced.
    postgres_seqs = await tag_sequences(stack.api.database_url)
    with Redis.from_url(data_url, decode_responses=True) as client:
        behind = {
            t
            for t in tags
            if int(client.hget(keys.tag_keys(t).meta, "seq") or 0) < postgres_seqs.get(t, 0)
        }
    assert behind <= fenced, (behind, fenced)
    refused = [a for a in storm.answers if a.code == "store_fenced"]
    assert refused, storm.codes(fault_at)
    assert {a.tag for a in refused} <= fenced
    rebuild_started = time.monotonic()
    result = await asyncio.to_thread(stack.run_cli, "rebuild", "--fenced")
    assert result.returncode == 0, result.stdout + result.stderr
    rebuilt_at = time.monotonic()
    print("\n" + result.stdout.strip())
    assert not fenced_tags(data_url, tags)
    storm.slots = dict(all_slots)  # units lost with holds are free again
    await asyncio.sleep(2.0)
    storm.stop.set()
    await storm_task
    # No refusal of an unavailable store once the rebuild is done.
    late = [a for a in storm.answers if a.at > rebuilt_at + 0.5 and a.status == 503]
    assert not late, late[:5]

    # 0 paid bookings lost: every confirm answered 200 is a confirmed booking in Postgres.
    paid = list(storm.confirmed)
    assert paid
    assert await confirmed_in_postgres(stack.api.database_url, paid) == set(paid)
    # 0 units sold twice: bookings never exceed a slot's capacity.
    booked = await booked_per_slot(stack.api.database_url)
    oversold = {s: n for s, n in booked.items() if n > capacity[s]}
    assert not oversold, oversold
    # Redis and Postgres agree once the persister has drained (inventory check).
    deadline = time.monotonic() + 30
    while True:
        check = await asyncio.to_thread(stack.run_cli, "check", "--json")
        if check.returncode == 0 and '"lagging": []' in check.stdout:
            break
        assert time.monotonic() < deadline, check.stdout + check.stderr
        await asyncio.sleep(0.5)
    assert '"fenced": []' in check.stdout, check.stdout

    windows = refusal_windows(storm.answers, fault_at)
    print_windows(f"{title}: refusals after the fault (t=0)", windows)
    # Until the fence has run, every change is refused; after it, only fenced tags.
    settled = max(windows[c][2] for c in ("store_unavailable", "store_unverified") if c in windows)
    print(
        f"  every change refused until {settled:.2f} s after the fault; fenced "
        f"{len(fenced)} of {len(tags)} tags; rebuild at {rebuild_started - fault_at:.2f} s "
        f"took {rebuilt_at - rebuild_started:.2f} s; {len(paid)} paid bookings, "
        f"{sum(booked.values())} of {sum(capacity.values())} units booked"
    )
    print(f"  answers after the fault: {dict(storm.codes(fault_at))}")


async def test_sentinel_failover_under_load(
    sentinel_group: RedisSentinelServers, databases: Databases, tmp_path: Path
) -> None:
    """kill -9 of the primary after its replica missed writes: the replica is promoted,
    the service follows it, the tags behind are fenced until a rebuild, nothing paid is
    lost and nothing is sold twice.

    Lost writes are made deterministic by breaking replication before the kill: the
    replica is given a wrong ``masterauth`` and its link to the primary is killed
    (``CLIENT KILL TYPE master``), so it keeps retrying the handshake and failing while
    the primary goes on acknowledging writes. Everything the storm writes from then on
    exists only on the primary (and in Postgres, as far as the persister got), which is
    what asynchronous replication loses when the primary dies with a replica behind. The
    replica is still a replica in every Sentinel's eyes (its link has been down for far
    less than ten times ``down-after-milliseconds``), so it is promoted.
    """
    group = sentinel_group
    async with running_stack(group.url, databases, tmp_path) as stack:
        all_slots, capacity, people = await seed(
            stack.api, hospitals=HOSPITALS, capacities=CAPACITIES, patients=PATIENTS
        )
        await asyncio.to_thread(group.wait_ready)
        storm = Storm(stack.api, dict(all_slots), people)
        storm_task = asyncio.create_task(storm.run(arrival_gap_s=0.05))
        await asyncio.sleep(1.0)
        primary, replica = group.primary, group.replica
        with Redis(port=replica.port) as client:
            client.config_set("masterauth", "not-the-password")
            client.client_kill_filter(_type="master")
        await wait_until(
            lambda: Redis(port=replica.port).info("replication")["master_link_status"] == "down",
            5,
            "the replica's link to go down",
        )
        link_down_at = time.monotonic()
        await asyncio.sleep(1.5)  # writes only the primary has
        fault_at = time.monotonic()
        primary.kill()
        accepted = [
            a for a in storm.answers if link_down_at <= a.at < fault_at and a.status in (200, 201)
        ]
        assert accepted, "the storm made no write while the replica was cut off: nothing to lose"

        promoted = await asyncio.to_thread(group.wait_for_failover, primary, 30)
        failover_s = time.monotonic() - fault_at
        assert promoted is replica
        await finish_and_verify(
            stack, storm, storm_task, all_slots, capacity, replica.url, fault_at, "failover"
        )
        print(f"  Sentinel promoted the replica {failover_s:.2f} s after the kill")
        assert stack.worker.poll() is None, "the worker must follow the failover, not exit"


async def test_restart_without_aof_under_load(
    private_redis: RedisServer, databases: Databases, tmp_path: Path
) -> None:
    """Redis killed and restarted without its append-only file mid-storm: every tag is
    fenced, the rebuild restores them, nothing paid is lost, nothing sold twice."""
    async with running_stack(private_redis.url, databases, tmp_path) as stack:
        all_slots, capacity, people = await seed(
            stack.api, hospitals=HOSPITALS, capacities=CAPACITIES, patients=PATIENTS
        )
        storm = Storm(stack.api, dict(all_slots), people)
        storm_task = asyncio.create_task(storm.run(arrival_gap_s=0.05))
        await asyncio.sleep(2.5)
        fault_at = time.monotonic()
        await asyncio.to_thread(private_redis.restart_empty)
        await finish_and_verify(
            stack,
            storm,
            storm_task,
            all_slots,
            capacity,
            private_redis.url,
            fault_at,
            "empty store",
        )
        assert stack.worker.poll() is None, "the worker must survive the restart, not exit"
