"""Session fixtures shared by the whole test suite.

Servers come from the environment when given (``INVENTORY_TEST_REDIS_URL``,
``INVENTORY_TEST_DATABASE_URL``) and are otherwise started privately by
:mod:`inventory.devtools.servers` in a temporary folder and stopped at the end of the session.
The fixtures every folder uses live here too: a Redis of a test's own (``private_redis``),
a Postgres of a module's own (``private_postgres``) and migrated databases copied from one
template (``databases``, ``database``, ``pool``).

A test must never FLUSHALL/FLUSHDB, drop databases or otherwise wipe a server whose handle is
not ``disposable``: it may be somebody's real server. Tests isolate themselves with unique key
prefixes and hash tags (Redis) and unique database or schema names (Postgres) instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

# ``import hypothesis`` is here, at collection time, on purpose: pytest rewrites the package
# (it is a plugin), and CPython 3.11.7 can fail that rewrite with "AST constructor recursion
# depth mismatch" when hypothesis's plugin first imports it from deep inside the terminal
# summary at the very end of a run that used no hypothesis test.
import aiohttp
import asyncpg
import hypothesis  # noqa: F401
import pytest

from inventory.devtools.servers import (
    PostgresServer,
    RedisClusterServers,
    RedisServer,
    free_port,
    start_postgres,
    start_redis,
    start_redis_cluster,
)
from inventory.record.pool import create_pool
from tests.databases import Databases, Dropper, create_template, database_url, drop_database

if TYPE_CHECKING:
    from tests.api.conftest import ApiServer


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI time limit, ``kill``) ends the run as Ctrl-C does: pytest then
    tears the session down, and the fixtures stop the servers they started. With the
    default action the process died at once and left them running."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@dataclass(frozen=True)
class ServerHandle:
    """A server for the tests: its URL, whether it may be wiped, and our process if ours.

    ``disposable`` is True for servers the session started itself, and for servers from the
    environment only when ``INVENTORY_TEST_DISPOSABLE`` is 1/true/yes. Never FLUSH a server
    that is not disposable; use unique key prefixes or hash tags instead. ``server`` is None
    for servers from the environment; a test that kills or restarts ``server`` must leave it
    running again.
    """

    url: str
    disposable: bool
    server: RedisServer | PostgresServer | None = None


def _env_disposable() -> bool:
    return os.environ.get("INVENTORY_TEST_DISPOSABLE", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """Redis for the session: ``INVENTORY_TEST_REDIS_URL`` or a private server."""
    url = os.environ.get("INVENTORY_TEST_REDIS_URL")
    if url:
        yield ServerHandle(url=url, disposable=_env_disposable())
        return
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield ServerHandle(url=server.url, disposable=True, server=server)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """Postgres for the session: ``INVENTORY_TEST_DATABASE_URL`` or a private server."""
    url = os.environ.get("INVENTORY_TEST_DATABASE_URL")
    if url:
        yield ServerHandle(url=url, disposable=_env_disposable())
        return
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield ServerHandle(url=server.dsn, disposable=True, server=server)


@pytest.fixture(scope="session")
async def databases(postgres_server: ServerHandle) -> AsyncIterator[Databases]:
    """Migrated databases on the session's Postgres, each a copy of a template that is
    migrated once per session (see tests/databases.py)."""
    template = await create_template(postgres_server.url)
    dropper = Dropper(postgres_server.url)
    try:
        yield Databases(postgres_server.url, template, dropper)
    finally:
        await asyncio.to_thread(dropper.close)
        await drop_database(postgres_server.url, database_url(postgres_server.url, template))


@pytest.fixture
async def database(databases: Databases) -> AsyncIterator[str]:
    """A migrated database of this test's own on the session's Postgres (dropped after)."""
    async with databases.scratch() as url:
        yield url


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on a migrated database of this test's own."""
    db_pool = await create_pool(database, min_size=1, max_size=4)
    try:
        yield db_pool
    finally:
        await db_pool.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, append-only with appendfsync always as in production:
    for tests that kill, restart, flush or roll it back, or that count what is in it."""
    with start_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def api_server(
    redis_server: ServerHandle, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """One API process (tests/api/conftest.py) for the HTTP tests of the whole session."""
    # The API helpers live in tests/api/conftest.py, which pytest loads as that folder's
    # conftest; imported when the fixture runs, not while pytest loads this file.
    from tests.api.conftest import api_env, running_api, verified_database

    database_url = verified_database(redis_server.url, databases)
    env = api_env(redis_server.url, database_url, free_port())
    with running_api(env, tmp_path_factory.mktemp("api") / "api.log") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A Postgres of this module's own, for tests that stop, kill and restart it (initdb
    costs seconds, so the module's tests share it: each test that needs it running
    restarts it when it finds it down)."""
    with start_postgres(tmp_path_factory.mktemp("private-postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A private 3-master Redis Cluster for the session (always started by the tests)."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"), masters=3) as cluster:
        yield cluster
