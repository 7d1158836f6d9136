"""Fixtures of the whole-stack tests: an API process on the test's private Redis and
database, and the worker's environment (a module that wants the worker running from the
start overrides ``stack`` with one that starts it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.devtools.servers import RedisServer

from .stack import Stack, open_stack


@pytest.fixture
def stack(private_redis: RedisServer, database: str, tmp_path: Path) -> Iterator[Stack]:
    """The API on the private Redis; the test starts the worker when it wants it."""
    running = open_stack(private_redis.url, database, tmp_path)
    try:
        yield running
    finally:
        running.close()
