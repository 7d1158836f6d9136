"""How a command reports that Redis or Postgres cannot be reached: one line on stderr
and exit status 1, instead of a traceback.

An operator runs `inventory check`, `rebuild` or `serve` precisely when something is
wrong (a Cluster master down, Postgres restarting); what they need then is which
server and why, in one line a script can also log. Bugs still end in a traceback:
only the failures of a server out of reach are caught here.
"""

from __future__ import annotations

import sys

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis.exceptions

from inventory.errors import InventoryError

#: Exit status of a command stopped by a server it could not use.
UNREACHABLE_STATUS = 1

#: What a command stopped by an outage may raise (InventoryError covers the store's
#: and the database's own wrappers: StoreUnavailableError, DatabaseUnavailableError).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    InventoryError,
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def describe(error: BaseException) -> str:
    """One line saying which server failed and how."""
    if isinstance(error, redis.exceptions.ClusterDownError):
        what = "Redis Cluster is down (a hash slot has no reachable master)"
    elif isinstance(error, redis.exceptions.RedisClusterException):
        what = "Redis Cluster unreachable"
    elif isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        what = "Redis unreachable"
    elif isinstance(error, redis.exceptions.RedisError):
        what = "Redis refused"
    elif isinstance(error, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        what = "Postgres unreachable"
    elif isinstance(error, TimeoutError):
        what = "timed out"
    else:
        what = ""
    detail = " ".join(str(error).split()) or type(error).__name__
    return f"{what}: {detail}" if what else detail


def report(command: str, error: BaseException) -> int:
    """Print ``inventory <command>: <what>`` on stderr; returns the exit status."""
    print(f"inventory {command}: {describe(error)}", file=sys.stderr)
    return UNREACHABLE_STATUS
