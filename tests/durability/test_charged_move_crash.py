"""Charged moves (改约 to a dearer window, the fee difference paid through its own
payment) cut short by kill -9: the API is killed while the differences' notifications
are being settled, started again, the notifications are delivered again (as WeChat Pay
does), the unpaid moves run past their deadline and the worker (killed once itself while
it decides them) abandons them. Afterwards each patient holds exactly one unit (the old
booking or the new one, never both, never neither) in Redis and in Postgres, the slots
conserve their units, every paid move is done, and no difference is kept without its
move: a paid difference backs the new booking, or it is refunded whole."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer, free_port
from inventory.domain import Hold, HoldState
from inventory.simulators.paysim import KeySet
from inventory.store import keys
from inventory.store.slot_store import counts_of_slots_hash
from tests.api.helpers import Catalogue
from tests.payments.conftest import LOOP_ENV, PaySimServer, start_paysim

from .stack import (
    Stack,
    kill_api_during,
    open_stack,
    patients,
    reserve,
    stop_process,
    wait_ready,
    wait_until,
    wait_verified,
)

pytestmark = pytest.mark.slow

MOVES = 24
PAID = 16
CHEAP, DEAR = 1200, 9000


@pytest.fixture
def paysim(tmp_path: Path) -> Iterator[tuple[KeySet, PaySimServer]]:
    """A pay simulator of this test's own."""
    keyset = KeySet.generate()
    server = start_paysim(keyset, tmp_path / "paysim.log")
    try:
        yield keyset, server
    finally:
        stop_process(server.process)


@pytest.fixture
def stack(
    private_redis: RedisServer,
    database: str,
    tmp_path: Path,
    paysim: tuple[KeySet, PaySimServer],
) -> Iterator[Stack]:
    """The API (WeChat Pay through the simulator) and the worker on the private Redis."""
    keyset, sim = paysim
    port = free_port()
    env = keyset.service_env(
        api_url=sim.url, notify_url=f"http://127.0.0.1:{port}/v1/payments/wechat/notify"
    )
    running = open_stack(
        private_redis.url, database, tmp_path, extra_env={**env, **LOOP_ENV}, port=port
    )
    try:
        running.start_worker()
        yield running
    finally:
        running.close()


async def _call(
    http: aiohttp.ClientSession, stack: Stack, account: str, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    headers = {**stack.api.headers(account), **kw.pop("headers", {})}
    async with http.request(method, stack.api.url + path, headers=headers, **kw) as answer:
        raw = await answer.read()
        return answer.status, orjson.loads(raw) if raw else None


async def _sim(http: aiohttp.ClientSession, sim: PaySimServer, path: str) -> Any:
    async with http.post(sim.url + path) as answer:
        return await answer.json()


async def _pay_booking(
    http: aiohttp.ClientSession, stack: Stack, sim: PaySimServer, account: str, hold_id: str
) -> None:
    status, payment = await _call(
        http, stack, account, "POST", f"/v1/holds/{hold_id}/payments", json={"openid": "o-x"}
    )
    assert status in (200, 201), payment
    paid = await _sim(http, sim, f"/sim/orders/{payment['payment_id']}/pay")
    assert paid["notify_status"] == 204, paid


async def test_api_and_worker_killed_mid_charged_moves(
    stack: Stack,
    paysim: tuple[KeySet, PaySimServer],
    private_redis: RedisServer,
    database: str,
    http: aiohttp.ClientSession,
) -> None:
    """kill -9 of the API while 16 differences are being settled, then of the worker
    while it abandons the 8 unpaid moves: one unit per patient, no money without its
    move."""
    _, sim = paysim
    await wait_verified(private_redis.url)
    await wait_ready(stack, http)
    shop = await Catalogue(stack.api, http).create(
        policy={"token_window_s": 1, "one_per_day": False, "hold_ttl_s": 60}
    )
    day = (datetime.now(tz=UTC) + timedelta(days=3)).date()
    _, (cheap,), _ = await shop.schedule([MOVES], visit_date=day, fee_fen=CHEAP)
    _, (dear,), _ = await shop.schedule([MOVES], visit_date=day + timedelta(days=1), fee_fen=DEAR)
    moves: list[tuple[str, str, str, str]] = []  # account, old booking, new id, payment
    for account, patient in await patients(stack, http, MOVES):
        status, hold = await reserve(stack, http, account, patient, cheap)
        assert status == 201, hold
        await _pay_booking(http, stack, sim, account, hold["hold_id"])
        status, pending = await _call(
            http, stack, account, "POST", f"/v1/bookings/{hold['hold_id']}/reschedule",
            json={"slot_id": dear}, headers={"Idempotency-Key": uuid.uuid4().hex},
        )  # fmt: skip
        assert (status, pending["status"]) == (201, "awaiting_payment"), pending
        status, started = await _call(
            http, stack, account, "POST", f"/v1/holds/{pending['reschedule_id']}/payments",
            json={"openid": "o-x"},
        )  # fmt: skip
        assert status == 200, started
        moves.append((account, hold["hold_id"], pending["reschedule_id"], started["payment_id"]))

    async def pay(payment_id: str) -> int:
        paid = await _sim(http, sim, f"/sim/orders/{payment_id}/pay")
        return int(paid["notify_status"])

    results = await kill_api_during(stack, [pay(m[3]) for m in moves[:PAID]])
    assert any(r != 204 for r in results), results  # the kill cut some short
    stack.api.process.wait()
    stack.restart_api()
    await wait_ready(stack, http)
    for _, _, _, payment_id in moves[:PAID]:  # WeChat Pay notifies again
        delivered = await _sim(http, sim, f"/sim/orders/{payment_id}/notify")
        assert delivered["notify_status"] == 204, delivered

    # The unpaid moves run out; the worker is killed once while deciding them.
    await wait_until(lambda: _decided_more_than(database, PAID), timeout_s=120)
    assert stack.worker is not None
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    stack.start_worker()
    await wait_until(lambda: _none_pending(database), timeout_s=120)

    client = Redis.from_url(private_redis.url, decode_responses=True)
    try:
        await _check_one_unit_each(client, moves)
        await wait_until(lambda: _postgres_agrees(database, moves), timeout_s=60)
    finally:
        await client.aclose()


async def _ready(stack: Stack, http: aiohttp.ClientSession) -> bool:
    try:
        async with http.get(stack.api.url + "/readyz") as answer:
            return answer.status == 200
    except aiohttp.ClientError:
        return False


async def _statuses(database: str) -> dict[str, int]:
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT status, count(*) AS n FROM reschedules GROUP BY 1")
    finally:
        await connection.close()
    return {r["status"]: int(r["n"]) for r in rows}


async def _decided_more_than(database: str, n: int) -> bool:
    statuses = await _statuses(database)
    return statuses.get("done", 0) + statuses.get("aborted", 0) > n


async def _none_pending(database: str) -> bool:
    return (await _statuses(database)).get("pending", 0) == 0


async def _hold(client: Any, hold_id: str) -> Hold | None:
    raw = await client.hget(keys.tag_keys(keys.tag_of_hold(hold_id)).holds, hold_id)
    return Hold.from_record(orjson.loads(raw)) if raw else None


async def _check_one_unit_each(client: Any, moves: list[tuple[str, str, str, str]]) -> None:
    moved = 0
    for _, old_id, new_id, _ in moves:
        old, new = await _hold(client, old_id), await _hold(client, new_id)
        assert old is not None
        assert old.moving_to == "", old
        booked = [h for h in (old, new) if h is not None and h.state is HoldState.BOOKED]
        assert len(booked) == 1, (old, new)
        if new is not None and new.state is HoldState.BOOKED:
            assert (old.state, old.end_reason, old.moved_to) == (
                HoldState.CANCELLED,
                "rescheduled",
                new_id,
            )
            moved += 1
    assert moved == PAID
    booked_total = 0
    for tag in {keys.tag_of_hold(moves[0][1]), keys.tag_of_hold(moves[0][2])}:
        counts = counts_of_slots_hash(await client.hgetall(keys.tag_keys(tag).slots))
        assert all(c.conserved for c in counts.values()), counts
        booked_total += sum(c.booked for c in counts.values())
    assert booked_total == len(moves)


async def _postgres_agrees(database: str, moves: list[tuple[str, str, str, str]]) -> bool:
    """Each patient has one open booking in Postgres too; a done move's difference backs
    its new booking unrefunded; an aborted move's difference is unpaid or refunded whole."""
    connection = await asyncpg.connect(database)
    try:
        for _, old_id, new_id, payment_id in moves:
            rows = await connection.fetch(
                "SELECT id, status FROM bookings WHERE id = ANY($1::text[])", [old_id, new_id]
            )
            if sum(r["status"] == "confirmed" for r in rows) != 1:
                return False
            move = await connection.fetchval("SELECT status FROM reschedules WHERE id = $1", new_id)
            payment = await connection.fetchrow(
                "SELECT status, booking_id, amount_fen FROM payments WHERE id = $1", payment_id
            )
            refunded = await connection.fetchval(
                "SELECT coalesce(sum(amount_fen), 0) FROM refunds WHERE payment_id = $1",
                payment_id,
            )
            if move == "done":
                if (payment["status"], payment["booking_id"], refunded) != ("paid", new_id, 0):
                    return False
            elif payment["status"] == "paid" and refunded != payment["amount_fen"]:
                return False
    finally:
        await connection.close()
    return True
