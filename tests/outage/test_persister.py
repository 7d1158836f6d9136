"""The persister with a Cluster master down: the live masters' streams go on reaching
Postgres promptly; the dead master's streams wait, and are persisted once it is back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from inventory.devtools.servers import RedisClusterServers
from inventory.record.persister import Persister, PersisterConfig
from inventory.record.queries import QUERIES
from inventory.store.connection import connect_redis

from ..durability.outbox_world import check_persisted, open_world
from ..lua.conftest import VISIT_DATE
from .conftest import cluster_url, department_on, kill_and_wait_flagged, wait_serving

#: How soon an event on a live master must be in Postgres (the persister polls every
#: 0.1 s here; generous for a shared CPU, far below the outage it must not wait for).
PROMPT_S = 5.0


async def _recorded(pool: Any, hold_id: str, timeout_s: float) -> float:
    """Seconds until the hold's row is in Postgres (AssertionError after timeout_s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        async with pool.acquire() as conn:
            if await conn.fetchrow(QUERIES["get_hold"], hold_id) is not None:
                return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{hold_id} not in Postgres after {timeout_s} s")


@pytest.mark.cluster
async def test_live_masters_streams_reach_postgres_while_one_master_is_down(
    cluster: RedisClusterServers, database: str
) -> None:
    """One master of three killed: holds on tags of the two live masters reach Postgres
    within seconds, one after another, for as long as it stays down; the dead master's
    tag is persisted in full once it is restarted on its append-only file."""
    client: Any = await connect_redis(cluster_url(cluster), cluster=True)
    departments = [department_on(i, VISIT_DATE, f"pers{i}-") for i in range(3)]
    try:
        async with open_world(
            cluster.url, database, client=client, tags=3, departments=departments
        ) as world:
            dead_tag, *live_tags = world.scenarios
            config = PersisterConfig(
                match=world.stream_patterns,
                block_s=0.1,
                scan_interval_s=0.5,
                stats_interval_s=0.2,
                claim_min_idle_s=0.5,
                retry_max_s=0.5,
            )
            worker = Persister(client, world.pool, config=config)
            stop = asyncio.Event()
            running = asyncio.create_task(worker.run(stop))
            try:
                slots = {
                    sc.tag: spec.slots[0].slot_id
                    for sc, spec in zip(world.scenarios, world.specs, strict=True)
                }
                before = await dead_tag.store.reserve(
                    dead_tag.request(slots[dead_tag.tag], patient_id=world.patients[0])
                )
                await _recorded(world.pool, before.hold.hold_id, PROMPT_S)
                await asyncio.to_thread(kill_and_wait_flagged, cluster, cluster.nodes[0])
                delays = []
                for n in range(6):
                    scenario = live_tags[n % 2]
                    outcome = await scenario.store.reserve(
                        scenario.request(slots[scenario.tag], patient_id=world.patients[n + 1])
                    )
                    delays.append(await _recorded(world.pool, outcome.hold.hold_id, PROMPT_S))
                assert max(delays) < PROMPT_S
                await asyncio.to_thread(cluster.nodes[0].restart)
                await asyncio.to_thread(wait_serving, cluster.nodes[0])
            finally:
                stop.set()
                await running
            assert await worker.drain(timeout_s=30)
            await check_persisted(world)
    finally:
        await client.aclose()
