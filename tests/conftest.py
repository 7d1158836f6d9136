"""Session fixtures shared by the whole test suite.

Servers come from the environment when given (``INVENTORY_TEST_REDIS_URL``,
``INVENTORY_TEST_DATABASE_URL``) and are otherwise started privately by
:mod:`inventory.devtools.servers` in a temporary folder and stopped at the end of the session.

A test must never FLUSHALL/FLUSHDB, drop databases or otherwise wipe a server whose handle is
not ``disposable``: it may be somebody's real server. Tests isolate themselves with unique key
prefixes and hash tags (Redis) and unique database or schema names (Postgres) instead.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

# Imported here, at collection time, on purpose: pytest rewrites the hypothesis package
# (it is a plugin), and CPython 3.11.7 can fail that rewrite with "AST constructor recursion
# depth mismatch" when hypothesis's plugin first imports it from deep inside the terminal
# summary at the very end of a run that used no hypothesis test.
import hypothesis  # noqa: F401
import pytest

from inventory.devtools.servers import (
    PostgresServer,
    RedisClusterServers,
    RedisServer,
    start_postgres,
    start_redis,
    start_redis_cluster,
)


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
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A private 3-master Redis Cluster for the session (always started by the tests)."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"), masters=3) as cluster:
        yield cluster
