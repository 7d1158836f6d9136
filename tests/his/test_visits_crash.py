"""The worker's visits loop killed (SIGKILL) while the no-show rule bans patients, then
started again: every no-show ends decided once, every patient banned once (one history
row, one event, the ban in Redis)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inventory.devtools.servers import free_port
from inventory.store import keys
from tests.api.conftest import api_env
from tests.his.conftest import SimAdmin
from tests.his.world import World, start_worker, today_schedule

pytestmark = pytest.mark.slow


@pytest.fixture
async def clean(world: World, admin: SimAdmin) -> World:
    """The world, with no faults in the simulator before and after the test."""
    return world


async def count(world: World, sql: str, *args: Any) -> int:
    """One number from Postgres."""
    [row] = await world.fetch(sql, *args)
    return int(row["n"])


async def test_worker_killed_while_banning_decides_each_no_show_once(
    clean: World, tmp_path: Path
) -> None:
    """120 patients miss a visit under the rule "1 no-show bans for 30 days"; the worker
    is killed half-way through the bans and started again: 120 bans, each once."""
    world = clean
    patients = 120
    schedule_id, (slot,) = await today_schedule(world, [patients])
    bookings = await world.book_many([slot] * patients)
    hospital = world.sync.hospital_id
    assert hospital is not None
    async with world.pool.acquire() as connection:
        await connection.execute(
            "UPDATE hospitals SET policy = policy || $2::jsonb WHERE id = $1",
            hospital,
            {"no_show_ban_count": 1, "no_show_ban_days": 30, "no_show_grace_s": 0},
        )
        # The session is over (moved into the past, as time would).
        await connection.execute(
            "UPDATE schedules SET release_at = now() - interval '4 hours',"
            " starts_at = now() - interval '3 hours',"
            " cancel_deadline = now() - interval '3 hours',"
            " ends_at = now() - interval '2 hours' WHERE id = $1",
            schedule_id,
        )
    env = api_env(world.redis.url, world.database_url, free_port())
    env["INVENTORY_WORKER_METRICS_PORT"] = "0"
    env.pop("INVENTORY_HIS_URL", None)
    decided_sql = "SELECT count(*) AS n FROM patient_ban_history WHERE no_shows && $1::text[]"
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        deadline = time.monotonic() + 90
        while (done := await count(world, decided_sql, bookings)) == 0:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.01)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        assert done < patients, "the worker finished before it could be killed"
        worker = start_worker(env, log)
        deadline = time.monotonic() + 120
        while await count(world, decided_sql, bookings) < patients or await count(
            world,
            "SELECT count(*) AS n FROM bookings WHERE id = ANY($1::text[])"
            " AND ban_checked_at IS NULL",
            bookings,
        ):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        async with world.pool.acquire() as connection:
            await connection.execute(
                "UPDATE hospitals SET policy = policy - 'no_show_ban_count' WHERE id = $1",
                hospital,
            )
    rows = await world.fetch(
        "SELECT b.id, b.patient_id, b.status,"
        " (SELECT count(*) FROM patient_ban_history h WHERE h.patient_id = b.patient_id)"
        "   AS decisions,"
        " (SELECT count(*) FROM lifecycle_events e WHERE e.patient_id = b.patient_id"
        "   AND e.type = 'patient_banned') AS events"
        " FROM bookings b WHERE b.id = ANY($1::text[])",
        bookings,
    )
    assert {(r["status"], r["decisions"], r["events"]) for r in rows} == {("no_show", 1, 1)}
    now_ms = datetime.now(tz=UTC).timestamp() * 1000
    for row in rows:
        until = await world.client.hget(keys.patient_keys(row["patient_id"]).bans, hospital)
        assert until is not None, row["patient_id"]
        assert int(until) > now_ms, row["patient_id"]
