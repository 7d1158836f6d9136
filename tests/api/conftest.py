"""A real API server process for the HTTP tests, on a migrated database of its own.

The server is ``inventory serve`` started as a subprocess on a free loopback port, so
tests go through a real HTTP client, real sockets and the real start-up path
(configuration from the environment, pools, migrations already applied).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from inventory.api.auth import mint_token
from inventory.devtools.servers import free_port
from inventory.ops.config import Settings


def _key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class ApiServer:
    """A running API process and what a test needs to talk to it."""

    url: str
    env: dict[str, str]
    settings: Settings
    database_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def token(self, account: str, *, operator: bool = False, ttl_s: int = 3600) -> str:
        return mint_token(self.settings, account, operator=operator, ttl_s=ttl_s)

    def headers(self, account: str, *, operator: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(account, operator=operator)}"}


def api_env(redis_url: str, database_url: str, port: int) -> dict[str, str]:
    """The environment of a test API process (fresh keys each session)."""
    env = dict(os.environ)
    env.update(
        {
            "INVENTORY_REDIS_URL": redis_url,
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_HOST": "127.0.0.1",
            "INVENTORY_PORT": str(port),
            "INVENTORY_JWT_KEYS": f"k2:{_key()},k1:{_key()}",
            "INVENTORY_JWT_CURRENT_KEY": "k2",
            "INVENTORY_FIELD_KEYS": f"f1:{_key()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{_key()}",
            "INVENTORY_RESERVE_RATE_PER_ACCOUNT": "1000/1",
            "INVENTORY_RESERVE_RATE_PER_IP": "100000/1",
        }
    )
    return env


async def mark_store_verified(redis_url: str, database_url: str) -> None:
    """Run the fence's full comparison once, as the worker does after a Redis start,
    so the API's verified-store gate opens."""
    from redis.asyncio import Redis

    from inventory.record.pool import create_pool
    from inventory.recovery.fence import verify_store
    from inventory.store.slot_store import SlotStore

    client = Redis.from_url(redis_url, decode_responses=True)
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await verify_store(await SlotStore.connect_scripts(client), pool)
    finally:
        await pool.close()
        await client.aclose()


async def create_database(server_url: str) -> str:
    """A fresh, migrated database on the session's Postgres; returns its URL."""
    from inventory.record.migrate import migrate

    name = f"api_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


def start_api(env: dict[str, str], log_path: Path, *, workers: int = 1) -> subprocess.Popen[bytes]:
    """Start ``inventory serve`` and wait until /healthz answers."""
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "inventory", "serve", "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{env['INVENTORY_PORT']}/healthz"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            import urllib.request

            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"API did not start: {log_path.read_text(errors='replace')[-2000:]}")


def stop_api(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def api_server(
    redis_server: Any, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """One API process for the HTTP tests of this session."""
    database_url = asyncio.run(create_database(postgres_server.url))
    asyncio.run(mark_store_verified(redis_server.url, database_url))
    port = free_port()
    env = api_env(redis_server.url, database_url, port)
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    process = start_api(env, log_path)
    environ = {k: v for k, v in env.items() if k.startswith("INVENTORY_")}
    server = ApiServer(
        url=f"http://127.0.0.1:{port}",
        env=env,
        settings=Settings.from_env(environ),
        database_url=database_url,
        log_path=log_path,
        process=process,
    )
    try:
        yield server
    finally:
        stop_api(process)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session
