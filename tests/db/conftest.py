"""Fixtures for the Postgres tests: a database of our own on the session's server.

The server from ``postgres_server`` is shared (and may be somebody's real server), so every
test module or test that needs a schema creates a database with a random name, and drops
only that database at the end.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from inventory.record.migrate import migrate_database
from inventory.record.pool import create_pool
from tests.conftest import ServerHandle
from tests.db.seed import Seed, seed_all


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def scratch_database(server: ServerHandle) -> AsyncIterator[str]:
    """Create an empty database with a random name; yield its URL; drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(server.url, name)
    finally:
        admin = await asyncpg.connect(server.url)
        try:
            # Our own connections are closed by now; a killed test may have left one.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await admin.close()


@pytest.fixture(scope="module")
async def migrated_url(postgres_server: ServerHandle) -> AsyncIterator[str]:
    """A database of this module's own, with every migration applied."""
    async with scratch_database(postgres_server) as url:
        await migrate_database(url)
        yield url


@pytest.fixture(scope="module")
async def pool(migrated_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the module's migrated database."""
    db_pool = await create_pool(migrated_url, min_size=1, max_size=4)
    try:
        yield db_pool
    finally:
        await db_pool.close()


@pytest.fixture(scope="module")
async def seeded(pool: asyncpg.Pool) -> Seed:
    """The realistic rows of tests/db/seed.py, committed once per module."""
    return await seed_all(pool)


@contextlib.asynccontextmanager
async def rolled_back(db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back at the end: the seed stays."""
    async with db_pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            yield connection
        finally:
            await transaction.rollback()
