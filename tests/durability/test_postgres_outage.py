"""The API while Postgres is away, on a Postgres of this module's own that the tests stop,
kill and whose backends they terminate: reserves keep working for patients the API
process never saw (their account links are read from Redis), and a confirm answers
200 or 503, never a 500, however its connection breaks."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.devtools.servers import PostgresServer
from inventory.record.migrate import migrate_database
from tests.api.conftest import mark_store_verified

from .stack import Stack, catalogue, open_stack, patients, reserve

pytestmark = pytest.mark.slow

#: How long Postgres stays stopped in the outage test (real: the server is stopped).
OUTAGE_S = 15.0


@pytest.fixture
async def stack(
    private_postgres: PostgresServer, redis_server: Any, tmp_path: Path
) -> AsyncIterator[Stack]:
    """An API process on the private Postgres (running again before each test)."""
    if not private_postgres.running:
        private_postgres.restart()
    database_url = private_postgres.create_database(f"outage_{os.urandom(4).hex()}")
    await migrate_database(database_url)
    await mark_store_verified(redis_server.url, database_url)
    running = open_stack(redis_server.url, database_url, tmp_path)
    try:
        yield running
    finally:
        running.close()
        if not private_postgres.running:
            private_postgres.restart()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session (no keep-alive: the API process is restarted)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def confirm(
    stack: Stack, http: aiohttp.ClientSession, account: str, hold_id: str
) -> tuple[int, str]:
    """POST /v1/holds/{id}/confirm: (status, problem code or "")."""
    async with http.post(
        f"{stack.api.url}/v1/holds/{hold_id}/confirm",
        json={"payment_ref": f"pay-{hold_id[-12:]}"},
        headers=stack.api.headers(account),
    ) as answer:
        body = await answer.json(content_type=None)
        return answer.status, str(body.get("code", ""))


def _json_line(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def test_reserves_for_patients_never_seen_work_while_postgres_is_stopped(
    stack: Stack, private_postgres: PostgresServer, http: aiohttp.ClientSession
) -> None:
    """Postgres stopped for a real outage: every patient registered before it (through
    an earlier API process; the new one never saw them, nor the slot) reserves with 201
    all through it; a confirm
    meanwhile answers 503 database_unavailable and succeeds once Postgres is back."""
    pairs = await patients(stack, http, 31)
    slot = await catalogue(stack, http, 100)
    stack.restart_api()  # a process that never saw these patients, nor the slot
    private_postgres.stop()
    stopped = time.monotonic()
    first_account, first_patient = pairs.pop()
    status, first = await reserve(stack, http, first_account, first_patient, slot)
    assert status == 201, first
    answers: Counter[tuple[int, str]] = Counter()
    # Spread over the outage: patients come one after another, none seen before.
    for index, (account, patient) in enumerate(pairs):
        await asyncio.sleep(max(0.0, stopped + index * OUTAGE_S / len(pairs) - time.monotonic()))
        status, body = await reserve(stack, http, account, patient, slot)
        answers[(status, str(body.get("code", "")))] += 1
    assert answers == Counter({(201, ""): len(pairs)}), answers
    assert await confirm(stack, http, first_account, first["hold_id"]) == (
        503,
        "database_unavailable",
    )
    # The 503's log line says why: the error's line and the driver's exception class.
    logged = [
        line
        for line in map(_json_line, stack.api.log_path.read_text(errors="replace").splitlines())
        if line.get("event") == "request.unavailable" and line.get("code") == "database_unavailable"
    ]
    assert logged, "no log line for the 503"
    assert str(logged[-1]["reason"]).startswith("Postgres is unavailable"), logged[-1]
    assert logged[-1]["cause"], logged[-1]
    assert time.monotonic() - stopped >= OUTAGE_S - 1
    private_postgres.restart()
    deadline = time.monotonic() + 30
    while (result := await confirm(stack, http, first_account, first["hold_id"]))[0] != 200:
        assert result == (503, "database_unavailable"), result
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)


async def _terminate_backends(private_postgres: PostgresServer, database: str, stop: Any) -> int:
    """Terminate every backend of ``database`` every 20-80 ms until ``stop`` is set."""
    killed = 0
    admin = await asyncpg.connect(private_postgres.dsn)
    try:
        while not stop.is_set():
            killed += int(
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            )
            await asyncio.sleep(0.02 + 0.06 * (killed % 7) / 7)
    finally:
        await admin.close()
    return killed


async def test_confirms_never_answer_500_while_connections_break(
    stack: Stack, private_postgres: PostgresServer, http: aiohttp.ClientSession
) -> None:
    """Confirms while every backend of the database is terminated again and again, then
    while Postgres is killed (SIGKILL) and restarted: each answer is 200 or 503 (never
    a 500), and every hold is booked in the end by retrying."""
    pairs = await patients(stack, http, 24)
    slot = await catalogue(stack, http, 100)
    holds: list[tuple[str, str]] = []
    for account, patient in pairs:
        status, body = await reserve(stack, http, account, patient, slot)
        assert status == 201, body
        holds.append((account, body["hold_id"]))
    database = stack.api.database_url.rsplit("/", 1)[1]
    answers: Counter[tuple[int, str]] = Counter()
    booked: set[str] = set()

    async def confirm_until_booked(account: str, hold_id: str) -> None:
        while hold_id not in booked:
            status, code = await confirm(stack, http, account, hold_id)
            answers[(status, code)] += 1
            if status == 200:
                booked.add(hold_id)
            else:
                await asyncio.sleep(0.05)

    stop = asyncio.Event()
    killer = asyncio.create_task(_terminate_backends(private_postgres, database, stop))
    confirms = [asyncio.create_task(confirm_until_booked(a, h)) for a, h in holds[:12]]
    await asyncio.sleep(3.0)
    stop.set()
    killed = await killer
    # The same with the whole server gone at once, mid-confirm.
    confirms += [asyncio.create_task(confirm_until_booked(a, h)) for a, h in holds[12:]]
    await asyncio.sleep(0.2)
    private_postgres.kill()
    await asyncio.sleep(2.0)
    private_postgres.restart()
    await asyncio.wait_for(asyncio.gather(*confirms), timeout=60)
    print(f"backends terminated: {killed}; answers: {dict(answers)}")
    assert killed > 0
    assert booked == {hold_id for _, hold_id in holds}
    unexpected = {
        k: n
        for k, n in answers.items()
        if k != (200, "") and k not in {(503, "database_unavailable"), (503, "overloaded")}
    }
    assert not unexpected, answers


@pytest.fixture
async def one_connection_stack(
    private_postgres: PostgresServer, redis_server: Any, tmp_path: Path
) -> AsyncIterator[Stack]:
    """An API process whose Postgres pool holds one connection."""
    if not private_postgres.running:
        private_postgres.restart()
    database_url = private_postgres.create_database(f"busy_{os.urandom(4).hex()}")
    await migrate_database(database_url)
    await mark_store_verified(redis_server.url, database_url)
    running = open_stack(
        redis_server.url,
        database_url,
        tmp_path,
        extra_env={"INVENTORY_DATABASE_POOL_MAX": "1"},
    )
    try:
        yield running
    finally:
        running.close()


async def test_a_busy_pool_is_overloaded_and_reserves_do_not_wait_for_it(
    one_connection_stack: Stack, redis_server: Any, http: aiohttp.ClientSession
) -> None:
    """Postgres healthy but the API's only pooled connection stuck in a slow statement:
    reserves answer 201 at once (their look-ups are read from Redis), and a request that
    must wait for the pool past its limit answers 503 overloaded with Retry-After, not
    database_unavailable (which would send an operator to the Postgres runbook)."""
    from redis.asyncio import Redis

    from inventory.store import keys

    stack = one_connection_stack
    pairs = await patients(stack, http, 4)
    slot = await catalogue(stack, http, 10)
    stack.restart_api()
    unseen_account, unseen_patient = pairs.pop()
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.delete(keys.patient_accounts_key(unseen_patient))  # Postgres must say
    await client.aclose()
    admin = await asyncpg.connect(stack.api.database_url)
    slow: asyncio.Task[Any] | None = None
    try:
        transaction = admin.transaction()
        await transaction.start()
        await admin.execute("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE")
        slow = asyncio.create_task(  # takes the only connection and waits on the lock
            http.get(stack.api.url + "/v1/bookings", headers=stack.api.headers(pairs[0][0]))
        )
        await asyncio.sleep(0.5)
        for account, patient in pairs:
            started = time.monotonic()
            status, body = await reserve(stack, http, account, patient, slot)
            assert status == 201, body
            assert time.monotonic() - started < 2.0
        async with http.post(
            stack.api.url + "/v1/holds",
            json={"slot_id": slot, "patient_id": unseen_patient, "channel": "app"},
            headers={**stack.api.headers(unseen_account), "Idempotency-Key": "busy-pool-1"},
        ) as answer:
            body = await answer.json(content_type=None)
            assert (answer.status, body["code"]) == (503, "overloaded"), body
            assert int(answer.headers["Retry-After"]) >= 1
    finally:
        await transaction.rollback()
        await admin.close()
        if slow is not None:
            (await slow).release()
