"""Fixtures for the Postgres tests: a migrated database of each module's own on the
session's server, a pool on it and the realistic rows of tests/db/seed.py.

The server from ``postgres_server`` is shared (and may be somebody's real server), so every
module creates a database with a random name and drops only that database at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from inventory.record.pool import create_pool
from tests.databases import Databases
from tests.db.seed import Seed, seed_all


@pytest.fixture(scope="module")
async def migrated_url(databases: Databases) -> AsyncIterator[str]:
    """A database of this module's own, with every migration applied (a template's copy)."""
    async with databases.scratch() as url:
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
