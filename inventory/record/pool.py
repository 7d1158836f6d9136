"""The Postgres connection pool, and the one place driver failures become typed errors.

Every connection, pooled or single, gets the same set-up: ``json``/``jsonb`` values are
encoded and decoded with orjson (pass Python objects, not JSON text), sessions run in UTC
with JIT off (short OLTP statements only pay its compile time), and statements have a
client-side timeout. Failures that mean "Postgres is not there right now" (refused, reset,
timed out, shutting down, too many connections, a read-only standby after a failover, a
connection the driver left in a state it cannot leave) surface as
:class:`~inventory.record.errors.DatabaseUnavailableError`, which the API answers with 503,
and the connection is discarded; a wait for a pooled connection that times out while
Postgres answers is :class:`~inventory.record.errors.DatabaseBusyError` (503 ``overloaded``);
anything else (a constraint, a bad statement) propagates unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import orjson
import structlog
from asyncpg import exceptions as pg_errors

from inventory.record.errors import DatabaseBusyError, DatabaseUnavailableError

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT_S",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "UNAVAILABLE_ERRORS",
    "acquire",
    "connect",
    "create_pool",
    "database_errors",
    "init_connection",
    "is_unavailable",
    "ping",
]

DEFAULT_COMMAND_TIMEOUT_S: Final = 10.0
"""Client-side limit of one statement; past it asyncpg cancels it and raises TimeoutError."""

DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
"""Limit for opening one connection (TCP, TLS, authentication)."""

log = structlog.get_logger(__name__)

_JSONB_BINARY_VERSION: Final = b"\x01"

UNAVAILABLE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,  # refused, reset, unreachable, name resolution
    TimeoutError,  # connect, acquire or command timeout (asyncio.TimeoutError is this)
    pg_errors.PostgresConnectionError,  # SQLSTATE 08: includes a connection lost mid-statement
    pg_errors.CannotConnectNowError,  # 57P03: starting up, recovering, shutting down
    pg_errors.AdminShutdownError,  # 57P01
    pg_errors.CrashShutdownError,  # 57P02
    pg_errors.TooManyConnectionsError,  # 53300
    pg_errors.InvalidAuthorizationSpecificationError,  # 28000/28P01: wrong role or password
    pg_errors.InvalidCatalogNameError,  # 3D000: the database does not exist
    pg_errors.ReadOnlySQLTransactionError,  # 25006: connected to a standby after a failover
)
"""Driver failures that mean Postgres cannot serve us now, not that the request is wrong."""

_CLIENT_STATE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    # The client's view of the connection broke (a protocol state it cannot leave, "cannot
    # switch to state ...; another operation is in progress" after a lost or cancelled
    # call): the connection is unusable, Postgres itself may be fine or gone.
    pg_errors.InternalClientError,
    # "connection is closed", "another operation is in progress", ... (but not its
    # ValueError subclasses: a value asyncpg cannot encode, a bad option, are our bugs).
    pg_errors.InterfaceError,
)


def is_unavailable(error: BaseException) -> bool:
    """Whether a driver failure means "Postgres cannot serve us now" (answered 503
    ``database_unavailable``), as opposed to a wrong statement or value."""
    if isinstance(error, UNAVAILABLE_ERRORS):
        return True
    return isinstance(error, _CLIENT_STATE_ERRORS) and not isinstance(
        error, (ValueError, pg_errors.UnsupportedClientFeatureError)
    )


def describe(error: BaseException) -> str:
    """A one-line account of a driver failure, without the DSN (it may hold a password)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Re-raise "Postgres is not there" failures inside the block as DatabaseUnavailableError.

    Usable around awaits: ``with database_errors(): await conn.execute(...)``.
    """
    try:
        yield
    except Exception as error:
        if not is_unavailable(error):
            raise
        raise _unavailable(error) from error


def _unavailable(error: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"Postgres is unavailable ({describe(error)})", cause=type(error).__name__
    )


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_BINARY_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    # The binary jsonb format is a version byte (1) and the JSON text.
    return orjson.loads(data[1:])


def _encode_json(value: Any) -> bytes:
    return orjson.dumps(value)


def _decode_json(data: bytes) -> Any:
    return orjson.loads(data)


async def init_connection(connection: Any) -> None:
    """Per-connection set-up: orjson codecs for ``jsonb`` and ``json`` (binary format)."""
    await connection.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )
    await connection.set_type_codec(
        "json", encoder=_encode_json, decoder=_decode_json, schema="pg_catalog", format="binary"
    )


def _server_settings(application_name: str) -> dict[str, str]:
    return {"application_name": application_name, "timezone": "UTC", "jit": "off"}


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init_size: int | None = None,
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    max_inactive_connection_lifetime_s: float = 300.0,
    application_name: str = "slot-inventory",
) -> asyncpg.Pool:
    """Open a pool of connections to ``dsn``, set up by :func:`init_connection`.

    ``init_size`` connections are opened now (default: ``min_size``); pass 0 to start
    without Postgres (the API keeps taking holds while Postgres is down, and the pool
    connects on first use). Raises DatabaseUnavailableError if the first connections fail.
    """
    if not 0 <= min_size <= max_size or max_size < 1:
        raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
    options: dict[str, Any] = {}
    if init_size is not None:
        options["init_size"] = init_size
    with database_errors():
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout_s,
            timeout=connect_timeout_s,
            max_inactive_connection_lifetime=max_inactive_connection_lifetime_s,
            init=init_connection,
            server_settings=_server_settings(application_name),
            **options,
        )


async def connect(
    dsn: str,
    *,
    command_timeout_s: float | None = DEFAULT_COMMAND_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    application_name: str = "slot-inventory",
) -> asyncpg.Connection:
    """Open one connection, set up like the pool's (for migrate and other commands).

    ``command_timeout_s`` None lets statements run as long as they take.
    """
    with database_errors():
        connection = await asyncpg.connect(
            dsn,
            command_timeout=command_timeout_s,
            timeout=connect_timeout_s,
            server_settings=_server_settings(application_name),
        )
        try:
            await init_connection(connection)
        except BaseException:
            connection.terminate()
            raise
    return connection


@contextlib.asynccontextmanager
async def acquire(
    pool: asyncpg.Pool, *, timeout_s: float | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """Borrow a connection; failures to get or use it become DatabaseUnavailableError.

    ``timeout_s`` bounds the wait for a free connection (None: wait as long as it takes).
    A wait that times out while the pool holds live connections is
    :class:`~inventory.record.errors.DatabaseBusyError` (503 ``overloaded``): Postgres
    answers, this process asks more than its pool (or its CPU) serves. A connection
    whose use failed as "unavailable" (see :func:`is_unavailable`) is terminated, never
    handed to the next caller in a state the driver cannot leave.
    """
    try:
        connection = await pool.acquire(timeout=timeout_s)
    except TimeoutError as error:
        if pool.get_size() > 0:
            raise DatabaseBusyError(
                f"no pooled Postgres connection free within {timeout_s} s"
            ) from error
        raise _unavailable(error) from error
    except Exception as error:
        if not is_unavailable(error):
            raise
        raise _unavailable(error) from error
    failed = False
    try:
        yield connection
    except Exception as error:
        if not is_unavailable(error):
            raise
        failed = True
        # A connection the server closed is already back in the pool (asyncpg detaches
        # the proxy, and then refuses every call on it): nothing left to discard.
        with contextlib.suppress(pg_errors.InterfaceError):
            connection.terminate()
        raise _unavailable(error) from error
    finally:
        await _release(pool, connection, quiet=failed)


async def _release(pool: asyncpg.Pool, connection: asyncpg.Connection, *, quiet: bool) -> None:
    """Give the connection back. The pool resets it first; when that fails the pool
    terminates it (and opens a new one on demand): the work before it is done or
    rolled back either way, so a failed reset is logged, not raised."""
    try:
        await pool.release(connection)
    except Exception as error:
        if not is_unavailable(error):
            raise
        if not quiet:
            log.warning("db.release_failed", error=describe(error))


async def ping(pool: asyncpg.Pool, *, timeout_s: float = 1.0) -> None:
    """Raise DatabaseUnavailableError unless Postgres answers ``SELECT 1`` in time (/readyz)."""
    async with acquire(pool, timeout_s=timeout_s) as connection:
        await connection.fetchval("SELECT 1", timeout=timeout_s)
