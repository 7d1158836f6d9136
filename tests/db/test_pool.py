"""The pool: orjson codecs on every connection, and typed "database unavailable" errors."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from inventory.devtools.servers import free_port
from inventory.errors import InventoryError
from inventory.record.errors import DatabaseBusyError, DatabaseUnavailableError
from inventory.record.pool import acquire, connect, create_pool, database_errors, ping
from tests.conftest import ServerHandle
from tests.databases import database_url


@pytest.fixture
async def one_connection(migrated_url: str) -> Any:
    """A pool of at most one connection, so the next caller gets what the last left."""
    small = await create_pool(migrated_url, min_size=1, max_size=1)
    try:
        yield small
    finally:
        await small.close()


async def _backend_pid(pool: asyncpg.Pool) -> int:
    async with acquire(pool, timeout_s=5) as connection:
        return int(await connection.fetchval("SELECT pg_backend_pid()"))


def nowhere() -> str:
    """A URL on a loopback port where nothing listens."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


async def test_jsonb_and_json_round_trip_through_orjson(pool: asyncpg.Pool) -> None:
    """jsonb and json parameters take Python objects and come back as them, Chinese intact."""
    value: dict[str, Any] = {"name": "协和医院", "n": [1, 2.5, None, True], "nested": {"a": {}}}
    async with acquire(pool) as connection:
        assert await connection.fetchval("SELECT $1::jsonb", value) == value
        assert await connection.fetchval("SELECT $1::json", value) == value
        assert await connection.fetchval("SELECT '{\"k\": [1]}'::jsonb") == {"k": [1]}
        assert await connection.fetchval("SELECT $1::jsonb[]", [value, {"b": 1}]) == [
            value,
            {"b": 1},
        ]


async def test_sessions_run_in_utc_with_a_name(pool: asyncpg.Pool) -> None:
    """Every pooled session is in UTC and names itself to pg_stat_activity."""
    async with acquire(pool) as connection:
        assert await connection.fetchval("SHOW timezone") == "UTC"
        assert await connection.fetchval("SHOW application_name") == "slot-inventory"
    await ping(pool)


async def test_unreachable_pool_is_database_unavailable() -> None:
    """Creating a pool with nothing listening raises DatabaseUnavailableError, an InventoryError."""
    with pytest.raises(DatabaseUnavailableError) as caught:
        await create_pool(nowhere(), min_size=1, max_size=2, connect_timeout_s=2)
    assert isinstance(caught.value, InventoryError)
    assert caught.value.http_status == 503
    assert caught.value.context["cause"] == "ConnectionRefusedError"


async def test_lazy_pool_starts_without_postgres_and_fails_typed_on_use() -> None:
    """init_size=0 opens no connection; using the pool then raises DatabaseUnavailableError."""
    lazy = await create_pool(nowhere(), min_size=0, max_size=2, init_size=0, connect_timeout_s=2)
    try:
        with pytest.raises(DatabaseUnavailableError):
            async with acquire(lazy, timeout_s=2) as connection:
                await connection.fetchval("SELECT 1")
        with pytest.raises(DatabaseUnavailableError):
            await ping(lazy)
    finally:
        await lazy.close()


async def test_missing_database_is_database_unavailable(postgres_server: ServerHandle) -> None:
    """A database that does not exist is reported as unavailable, not as a crash."""
    with pytest.raises(DatabaseUnavailableError, match="InvalidCatalogNameError"):
        await connect(database_url(postgres_server.url, "no_such_database_here"))


async def test_statement_errors_are_not_wrapped(pool: asyncpg.Pool) -> None:
    """A wrong statement stays the driver's error: only unavailability is translated."""
    async with acquire(pool) as connection:
        with pytest.raises(asyncpg.UndefinedTableError):
            await connection.fetch("SELECT * FROM no_such_table")
        with database_errors(), pytest.raises(asyncpg.DataError):
            await connection.fetchval("SELECT $1::int", "not a number")


async def test_lost_connection_is_database_unavailable(pool: asyncpg.Pool) -> None:
    """A connection killed mid-statement surfaces as DatabaseUnavailableError."""
    async with acquire(pool) as victim:
        pid = await victim.fetchval("SELECT pg_backend_pid()")

        async def long_statement() -> None:
            with database_errors():
                await victim.execute("SELECT pg_sleep(5)")

        running = asyncio.create_task(long_statement())
        async with pool.acquire() as killer:
            for _ in range(500):  # until the statement is running (at most 5 s)
                if await killer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    pid,
                ):
                    break
                await asyncio.sleep(0.01)
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(DatabaseUnavailableError) as caught:
            await running
        assert isinstance(caught.value.__cause__, asyncpg.PostgresConnectionError)


async def test_pool_sizes_are_checked() -> None:
    """min_size above max_size is a programming error, refused before any connection."""
    with pytest.raises(ValueError, match="min_size"):
        await create_pool(nowhere(), min_size=3, max_size=2)


async def test_a_connection_busy_with_another_call_is_unavailable_and_discarded(
    one_connection: asyncpg.Pool,
) -> None:
    """A second call on a connection whose first is still running (asyncpg's
    InterfaceError "another operation is in progress", what a lost or cancelled call
    leaves behind) is 503 database_unavailable, and the pool hands out a new connection
    next, not the broken one."""
    first = await _backend_pid(one_connection)
    running: list[asyncio.Task[Any]] = []

    async def two_calls_at_once() -> None:
        async with acquire(one_connection, timeout_s=5) as connection:
            running.append(asyncio.create_task(connection.execute("SELECT pg_sleep(2)")))
            await asyncio.sleep(0.1)
            await connection.fetchval("SELECT 1")

    with pytest.raises(DatabaseUnavailableError) as caught:
        await two_calls_at_once()
    assert isinstance(caught.value.__cause__, asyncpg.InterfaceError)
    assert caught.value.http_status == 503
    with pytest.raises(asyncpg.PostgresConnectionError):  # terminated under it
        await running[0]
    assert await _backend_pid(one_connection) != first


async def test_an_internal_client_error_is_unavailable_and_discarded(
    one_connection: asyncpg.Pool,
) -> None:
    """asyncpg's InternalClientError ("cannot switch to state 15; another operation is
    in progress", seen in a confirm during a Postgres outage) is 503, never a 500, and
    its connection is not reused."""
    first = await _backend_pid(one_connection)
    with pytest.raises(DatabaseUnavailableError) as caught:
        async with acquire(one_connection, timeout_s=5):
            raise asyncpg.InternalClientError(
                "cannot switch to state 15; another operation is in progress"
            )
    assert caught.value.context["cause"] == "InternalClientError"
    assert await _backend_pid(one_connection) != first


async def test_a_pool_wait_that_times_out_while_postgres_answers_is_overloaded(
    one_connection: asyncpg.Pool,
) -> None:
    """Every pooled connection busy past the wait: 503 overloaded (the process is at
    capacity), not database_unavailable (which sends an operator to the Postgres
    runbook); with Postgres unreachable the same wait stays database_unavailable."""
    async with acquire(one_connection, timeout_s=5):
        with pytest.raises(DatabaseBusyError) as caught:
            async with acquire(one_connection, timeout_s=0.2):
                pass
    assert caught.value.code == "overloaded"
    assert caught.value.http_status == 503
    assert not isinstance(caught.value, DatabaseUnavailableError)
    lazy = await create_pool(nowhere(), min_size=0, max_size=1, init_size=0, connect_timeout_s=2)
    try:
        with pytest.raises(DatabaseUnavailableError):
            async with acquire(lazy, timeout_s=0.5):
                pass
    finally:
        await lazy.close()
