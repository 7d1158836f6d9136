"""Moves of bookings to another day (改约 across tags) cut short by kill -9: the API is
killed while dozens of moves are between their steps, then the worker (killed once
itself while it recovers them) finishes or undoes every one. Afterwards each patient
holds exactly one unit (the old booking or the new one, never both, never neither) in
Redis and in Postgres, the slots conserve their units, no booking is left marked as
moving and no move is left pending."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer
from inventory.domain import Hold, HoldState
from inventory.store import keys
from inventory.store.slot_store import counts_of_slots_hash
from tests.api.helpers import Catalogue

from .stack import (
    Stack,
    kill_api_during,
    patients,
    reserve,
    stop_process,
    wait_ready,
    wait_until,
    wait_verified,
)

pytestmark = pytest.mark.slow

MOVES = 60


@pytest.fixture
def stack(stack: Stack) -> Stack:
    """The API and the worker on the private Redis."""
    stack.start_worker()
    return stack


async def _pending(database: str) -> tuple[int, int]:
    """(moves pending, moves decided)."""
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT status, count(*) AS n FROM reschedules GROUP BY 1")
    finally:
        await connection.close()
    by_status = {r["status"]: int(r["n"]) for r in rows}
    return by_status.get("pending", 0), by_status.get("done", 0) + by_status.get("aborted", 0)


async def test_api_and_worker_killed_mid_moves_leave_one_unit_per_patient(
    stack: Stack, private_redis: RedisServer, database: str, http: aiohttp.ClientSession
) -> None:
    """kill -9 of the API during 60 concurrent moves to another day, then of the worker
    while it recovers them: every patient ends with exactly one unit."""
    await wait_verified(private_redis.url)
    await wait_ready(stack, http)
    shop = await Catalogue(stack.api, http).create(policy={"token_window_s": 1})
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    _, (from_slot,), _ = await shop.schedule([MOVES], visit_date=day)
    _, (to_slot,), _ = await shop.schedule([MOVES], visit_date=day + timedelta(days=1))
    pairs = await patients(stack, http, MOVES)
    bookings: list[tuple[str, str]] = []
    for account, patient in pairs:
        status, hold = await reserve(stack, http, account, patient, from_slot)
        assert status == 201, hold
        async with http.post(
            stack.api.url + f"/v1/holds/{hold['hold_id']}/confirm",
            json={"payment_ref": f"wx-{patient}"},
            headers=stack.api.headers(account),
        ) as answer:
            assert answer.status == 200, await answer.text()
        bookings.append((account, hold["hold_id"]))

    # Nobody recovers anything while the API is being killed.
    assert stack.worker is not None
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    to_tag = keys.department_day_tag(shop.department_id, day + timedelta(days=1))
    moves = [(account, old, uuid.uuid4().hex) for account, old in bookings]

    async def move(account: str, old: str, key: str) -> int:
        async with http.post(
            stack.api.url + f"/v1/bookings/{old}/reschedule",
            json={"slot_id": to_slot},
            headers={**stack.api.headers(account), "Idempotency-Key": key},
        ) as answer:
            await answer.read()
            return answer.status

    results = await kill_api_during(stack, [move(*m) for m in moves])
    cut_short = sum(isinstance(r, aiohttp.ClientError) for r in results)
    assert cut_short > 0, results  # the kill landed while moves were under way
    assert (await _pending(database))[0] > 0

    # The worker recovers; it is killed once after deciding some, then started again.
    stack.start_worker()
    await wait_until(lambda: _decided_some(database), timeout_s=60)
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    stack.start_worker()
    await wait_until(lambda: _none_pending(database), timeout_s=90)

    client = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await _check_one_unit_each(client, database, moves, to_tag)
        await wait_until(lambda: _postgres_agrees(database, moves, to_tag), timeout_s=30)
    finally:
        await client.aclose()
        stop_process(stack.api.process)


async def _decided_some(database: str) -> bool:
    return (await _pending(database))[1] > 0


async def _none_pending(database: str) -> bool:
    return (await _pending(database))[0] == 0


def _new_id(account: str, key: str, to_tag: str) -> str:
    return keys.hold_id_for(account, "reschedule:" + key, to_tag)


async def _hold(client: Any, hold_id: str) -> Hold | None:
    raw = await client.hget(keys.tag_keys(keys.tag_of_hold(hold_id)).holds, hold_id)
    return Hold.from_record(orjson.loads(raw)) if raw else None


async def _check_one_unit_each(
    client: Any, database: str, moves: list[tuple[str, str, str]], to_tag: str
) -> None:
    moved = 0
    for account, old_id, key in moves:
        old = await _hold(client, old_id)
        new = await _hold(client, _new_id(account, key, to_tag))
        assert old is not None
        assert old.moving_to == "", old
        booked = [h for h in (old, new) if h is not None and h.state is HoldState.BOOKED]
        assert len(booked) == 1, (old, new)
        if new is not None and new.state is HoldState.BOOKED:
            assert (old.state, old.end_reason, old.moved_to) == (
                HoldState.CANCELLED,
                "rescheduled",
                new.hold_id,
            )
            moved += 1
    assert moved > 0
    booked_total = 0
    for tag in (keys.tag_of_hold(moves[0][1]), to_tag):
        counts = counts_of_slots_hash(await client.hgetall(keys.tag_keys(tag).slots))
        assert all(c.conserved for c in counts.values()), counts
        booked_total += sum(c.booked for c in counts.values())
    assert booked_total == len(moves)


async def _postgres_agrees(database: str, moves: list[tuple[str, str, str]], to_tag: str) -> bool:
    """Each patient has exactly one open booking in Postgres too (once the persister has
    caught up), and every done move's new booking is that one."""
    connection = await asyncpg.connect(database)
    try:
        for account, old_id, key in moves:
            new_id = _new_id(account, key, to_tag)
            rows = await connection.fetch(
                "SELECT id, status FROM bookings WHERE id = ANY($1::text[])", [old_id, new_id]
            )
            if sum(r["status"] == "confirmed" for r in rows) != 1:
                return False
            done = await connection.fetchval("SELECT status FROM reschedules WHERE id = $1", new_id)
            confirmed = next(r["id"] for r in rows if r["status"] == "confirmed")
            if done == "done" and confirmed != new_id:
                return False
        # One notifier event per done move, whoever finished it (the API or the worker).
        events = await connection.fetchval(
            "SELECT count(*) FROM lifecycle_events WHERE type = 'booking_rescheduled'"
        )
        done = await connection.fetchval("SELECT count(*) FROM reschedules WHERE status = 'done'")
        if events != done:
            return False
    finally:
        await connection.close()
    return True
