"""Real API server processes for the HTTP tests: their environment, start and stop.

A server is ``inventory serve`` started as a subprocess on a free loopback port, so tests
go through a real HTTP client, real sockets and the real start-up path (configuration from
the environment, pools, migrations already applied). The session's one is the
``api_server`` fixture (tests/conftest.py); a module that needs other settings starts its
own with :func:`running_api`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inventory.api.auth import mint_token
from inventory.devtools.servers import free_port
from inventory.ops.config import Settings
from tests.databases import Databases


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


def launch_api(env: dict[str, str], log_path: Path, *, workers: int = 1) -> ApiServer:
    """Start ``inventory serve`` with ``env`` (see :func:`api_env`), wait until /healthz
    answers; the handle a test talks to it by."""
    process = start_api(env, log_path, workers=workers)
    environ = {k: v for k, v in env.items() if k.startswith("INVENTORY_")}
    return ApiServer(
        url=f"http://127.0.0.1:{env['INVENTORY_PORT']}",
        env=env,
        settings=Settings.from_env(environ),
        database_url=env["INVENTORY_DATABASE_URL"],
        log_path=log_path,
        process=process,
    )


@contextlib.contextmanager
def running_api(env: dict[str, str], log_path: Path, *, workers: int = 1) -> Iterator[ApiServer]:
    """:func:`launch_api`, stopped at the end of the with-block."""
    server = launch_api(env, log_path, workers=workers)
    try:
        yield server
    finally:
        stop_api(server.process)


@contextlib.contextmanager
def configured_api(
    redis_url: str, databases: Databases, folder: Path, settings: dict[str, str]
) -> Iterator[ApiServer]:
    """An API process of its own: a fresh verified database, the test environment with
    ``settings`` over it, its log in ``folder``; stopped at the end of the with-block."""
    env = api_env(redis_url, verified_database(redis_url, databases), free_port()) | settings
    with running_api(env, folder / "api.log") as server:
        yield server


def verified_database(redis_url: str, databases: Databases) -> str:
    """A new migrated database, the store at ``redis_url`` verified against it as the
    worker would (the API's gate then opens with no worker running); its URL."""
    database_url = asyncio.run(databases.create(prefix="api"))
    asyncio.run(mark_store_verified(redis_url, database_url))
    return database_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each of schemathesis's items (one per API operation) its own node id. Pytest 9
    builds a function's node id from its original name and its parametrization, which
    schemathesis's items do not carry, so all got ``...::test_api_conforms``: pytest still
    ran each, but pytest-xdist tells items apart by node id and ran only the first."""
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and item.name != item.originalname
            and item.nodeid.endswith("::" + item.originalname)
        ):
            # The id a node without its own gets: the parent's, then the full name.
            item._id = item.parent.id.child(item.name)  # type: ignore[union-attr]
