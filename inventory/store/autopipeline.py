"""An auto-pipelining Redis connection for the store's script calls.

redis-py spends most of a script call's CPU on itself: a pool checkout, packing, one
socket write and one read per call. Under load many handlers call scripts in the same
event-loop iteration, so this module gives each process one connection on which every
command issued in one iteration goes out in **one** socket write; replies are parsed by
``hiredis.Reader`` and handed to the callers' futures in order (Redis answers a
connection's commands first in, first out).

The promises are redis-py's:

* replies are decoded as with ``decode_responses=True`` (bulk strings -> str, integers
  -> int, arrays -> lists, nil -> None) and error replies raise the same exception types,
  mapped by redis-py's own parser (``NoScriptError``, ``ResponseError``, ...);
* a script call that meets NOSCRIPT (after SCRIPT FLUSH or a restart) loads the script
  and runs it once more, as ``AsyncScript`` does: NOSCRIPT means it did not run, so
  nothing is lost or run twice;
* a lost connection fails every call written or queued on it with
  ``redis.exceptions.ConnectionError`` (such a call may or may not have run, exactly as
  with redis-py); the next call connects again. A call whose reply is overdue fails
  every call on the connection with ``redis.exceptions.TimeoutError`` and drops the
  connection, because later replies could no longer be matched to their callers.

``on_connect`` runs after every (re)connection before any queued call is written
(the API's verified-store gate, see :mod:`inventory.recovery.fence`); script calls that had to
wait for a connection check their gate again afterwards, so the first call after a
Redis restart already sees the gate closed.

Standalone servers over TCP or a Unix socket only (no TLS, no Cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import redis.exceptions
from redis._parsers import BaseParser  # redis-py's error-reply -> exception table

from inventory.store.scripts import SCRIPT_NAMES, Scripts, assemble, with_shebang

#: URL schemes this client speaks (rediss:// needs TLS: use redis-py there).
SUPPORTED_SCHEMES = frozenset({"redis", "unix"})

#: Runs on every fresh connection before queued calls are written.
ConnectHook = Callable[["PipelinedConnection"], Awaitable[None]]


def supports_url(url: str) -> bool:
    """Whether :meth:`AutoPipeline.from_url` can serve ``url``."""
    return urlsplit(url).scheme in SUPPORTED_SCHEMES


def pack_command(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, encoded as redis-py encodes it (str as UTF-8, int, float).

    Anything else (a bool, None, ...) raises ``redis.exceptions.DataError`` as redis-py does.
    """
    try:
        return cast(bytes, hiredis.pack_command(args))
    except TypeError as error:
        raise redis.exceptions.DataError(str(error)) from None


@dataclass
class PipelineStats:
    """Counters of one client (for tests and benchmarks)."""

    connects: int = 0
    #: Socket writes of commands; with load, far fewer than ``commands``.
    writes: int = 0
    commands: int = 0
    #: NOSCRIPT replies answered by SCRIPT LOAD and a second EVALSHA.
    reloads: int = 0


class PipelinedConnection(asyncio.Protocol):
    """One Redis connection: commands queued in one loop iteration go out together,
    replies resolve the queued futures in order."""

    def __init__(self, owner: AutoPipeline, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self._loop = loop
        self._reader = hiredis.Reader(
            encoding="utf-8",
            replyError=BaseParser.parse_error,
            protocolError=redis.exceptions.InvalidResponse,
        )
        self._transport: asyncio.Transport | None = None
        #: Futures of written or queued commands, oldest first.
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._queued: list[bytes] = []
        self._flush_scheduled = False
        #: (commands sent in total after that write, monotonic deadline) per write.
        self._deadlines: deque[tuple[int, float]] = deque()
        self._sent = 0
        self._answered = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False
        self._closing = False
        self.lost = loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        answered = 0
        demoted = False
        try:
            reply = reader.gets()
            while reply is not False:
                future = waiters.popleft()
                answered += 1
                demoted = demoted or isinstance(reply, redis.exceptions.ReadOnlyError)
                if not future.done():  # a cancelled caller still has its reply consumed
                    if isinstance(reply, redis.exceptions.RedisError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
                reply = reader.gets()
        except redis.exceptions.InvalidResponse as error:
            self._answered += answered
            self._abort(redis.exceptions.ConnectionError(f"Protocol error from Redis: {error}"))
        except IndexError:
            self._abort(redis.exceptions.ConnectionError("Redis sent a reply nobody asked for"))
        else:
            self._answered += answered
            if demoted:
                # The server became a replica (a failover): the next call reconnects, and
                # with a resolver it goes to the primary the Sentinels name now.
                self._abort(redis.exceptions.ConnectionError("the primary became a replica"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        self._fail_all(redis.exceptions.ConnectionError(f"Connection to Redis lost{reason}"))

    # -- sending ----------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed command; it is written with the others of this iteration."""
        if self.closed or self._closing:
            raise redis.exceptions.ConnectionError("Connection to Redis lost")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiters.append(future)
        self._queued.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    async def execute(self, *args: Any) -> Any:
        """Send one command on this connection and return its decoded reply."""
        return await self.send(pack_command(args))

    def _flush(self) -> None:
        self._flush_scheduled = False
        queued = self._queued
        if not queued or self.closed or self._transport is None:
            return
        if self._transport.is_closing():  # their futures fail in connection_lost
            queued.clear()
            return
        self._transport.write(queued[0] if len(queued) == 1 else b"".join(queued))
        self._sent += len(queued)
        stats = self._owner.stats
        stats.writes += 1
        stats.commands += len(queued)
        queued.clear()
        timeout_s = self._owner.timeout_s
        if timeout_s is not None:
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= self._answered:
                deadlines.popleft()
            deadlines.append((self._sent, self._loop.time() + timeout_s))
            if self._watchdog is None:
                self._watchdog = self._loop.call_later(timeout_s, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if self.closed:
            return
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= self._answered:
            deadlines.popleft()
        if not deadlines:
            return
        due = deadlines[0][1]
        if self._loop.time() >= due:
            timeout_s = self._owner.timeout_s
            self._abort(redis.exceptions.TimeoutError(f"Redis did not answer within {timeout_s} s"))
            return
        self._watchdog = self._loop.call_at(due, self._check_deadlines)

    # -- ending -----------------------------------------------------------------------

    def _abort(self, error: redis.exceptions.RedisError) -> None:
        self._fail_all(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail_all(self, error: redis.exceptions.RedisError) -> None:
        if not self.closed:
            self.closed = True
            self._owner._forget(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._queued.clear()
        self._deadlines.clear()
        waiters, self._waiters = self._waiters, deque()
        for future in waiters:
            if not future.done():
                future.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    async def drain(self) -> None:
        """Wait until every call written or queued so far has its reply."""
        if self._waiters:
            await asyncio.gather(*self._waiters, return_exceptions=True)

    def close(self) -> None:
        """Close the socket (calls still waiting fail with ConnectionError)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()
        else:
            self._fail_all(redis.exceptions.ConnectionError("Connection to Redis closed"))


class AutoPipeline:
    """A standalone Redis server behind one auto-pipelined connection.

    ``execute(*args)`` runs any command; :func:`pipelined_scripts` builds the store's
    scripts on it. ``timeout_s`` bounds the wait for a reply (None: no bound).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 5.0,
        timeout_s: float | None = 5.0,
        client_name: str | None = None,
        on_connect: ConnectHook | None = None,
        resolve: Callable[[], Awaitable[tuple[str, int]]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.db = db
        self._username = username
        self._password = password
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.client_name = client_name
        self.on_connect = on_connect
        #: Asked for (host, port) before every connect (Sentinel: the current primary).
        self.resolve = resolve
        self.stats = PipelineStats()
        #: The connection calls go to; None until connected and after it is lost.
        self.connection: PipelinedConnection | None = None
        self._connecting: asyncio.Task[PipelinedConnection] | None = None
        self._loading: dict[str, asyncio.Task[str]] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AutoPipeline:
        """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path?db=N``."""
        parts = urlsplit(url)
        if parts.scheme not in SUPPORTED_SCHEMES:
            raise ValueError(f"the auto-pipelined client does not speak {parts.scheme}://")
        query = parse_qs(parts.query)
        db_text = query.get("db", [""])[0]
        if parts.scheme == "redis":
            path_db = parts.path.lstrip("/")
            db_text = path_db or db_text
            kwargs.setdefault("host", parts.hostname or "127.0.0.1")
            kwargs.setdefault("port", parts.port or 6379)
        else:
            kwargs.setdefault("path", unquote(parts.path))
        if db_text:
            kwargs.setdefault("db", int(db_text))
        if parts.username:
            kwargs.setdefault("username", unquote(parts.username))
        if parts.password:
            kwargs.setdefault("password", unquote(parts.password))
        return cls(**kwargs)

    def __repr__(self) -> str:
        where = self.path or f"{self.host}:{self.port}"
        return f"AutoPipeline<{where}/{self.db}>"

    # -- connecting -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether calls can be written right now without connecting first."""
        return self.connection is not None

    async def connect(self) -> PipelinedConnection:
        """The live connection, opening one first if there is none (shared by callers)."""
        if self.connection is not None:
            return self.connection
        if self._closed:
            raise redis.exceptions.ConnectionError("the auto-pipelined client is closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
            # Its error reaches every caller still waiting; none may be left to ask.
            self._connecting.add_done_callback(_retrieve)
        # shield: one caller's cancellation must not abort the others' connection.
        return await asyncio.shield(self._connecting)

    async def _open(self) -> PipelinedConnection:
        loop = asyncio.get_running_loop()
        where = self.path or f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.resolve is not None:
                    self.host, self.port = await self.resolve()
                    where = f"{self.host}:{self.port}"
                if self.path is not None:
                    _, connection = await loop.create_unix_connection(
                        lambda: PipelinedConnection(self, loop), self.path
                    )
                else:
                    _, connection = await loop.create_connection(
                        lambda: PipelinedConnection(self, loop), self.host, self.port
                    )
                try:
                    await self._handshake(connection)
                except BaseException:
                    connection.close()
                    raise
        except TimeoutError:
            raise redis.exceptions.TimeoutError(f"Timeout connecting to Redis at {where}") from None
        except OSError as error:
            raise redis.exceptions.ConnectionError(
                f"Error connecting to Redis at {where}: {error}"
            ) from error
        if connection.closed:
            raise redis.exceptions.ConnectionError(f"Connection to Redis at {where} lost")
        if self._closed:
            connection.close()
            raise redis.exceptions.ConnectionError("the auto-pipelined client is closed")
        self.stats.connects += 1
        self.connection = connection
        return connection

    async def _handshake(self, connection: PipelinedConnection) -> None:
        if self._password is not None:
            if self._username is not None:
                await connection.execute("AUTH", self._username, self._password)
            else:
                await connection.execute("AUTH", self._password)
        if self.db:
            await connection.execute("SELECT", self.db)
        if self.client_name:
            await connection.execute("CLIENT", "SETNAME", self.client_name)
        if self.on_connect is not None:
            await self.on_connect(connection)

    def _forget(self, connection: PipelinedConnection) -> None:
        if self.connection is connection:
            self.connection = None

    # -- calls ------------------------------------------------------------------------

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one command on the live connection (call :meth:`connect` first when
        :attr:`connected` is False); the future has its decoded reply."""
        connection = self.connection
        if connection is None:
            raise redis.exceptions.ConnectionError("not connected to Redis")
        return connection.send(pack_command(args))

    async def execute(self, *args: Any) -> Any:
        """Run one command (connecting first if needed) and return its decoded reply."""
        connection = self.connection
        if connection is None:
            connection = await self.connect()
        return await connection.send(pack_command(args))

    async def load_script(self, source: str) -> str:
        """SCRIPT LOAD ``source`` once however many callers ask at the same time."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        task = self._loading.get(sha)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.execute("SCRIPT", "LOAD", source))
            self._loading[sha] = task
            task.add_done_callback(lambda _: self._loading.pop(sha, None))
        return await asyncio.shield(task)

    # -- closing ----------------------------------------------------------------------

    async def aclose(self, *, drain_timeout_s: float = 5.0) -> None:
        """Refuse new calls, wait (up to ``drain_timeout_s``) for the replies of calls
        already made, then close the socket."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None and not connecting.done():
            # Not cancelled: its callers get ConnectionError (closed), not CancelledError.
            with contextlib.suppress(redis.exceptions.RedisError):
                await asyncio.shield(connecting)
        connection = self.connection
        self.connection = None
        if connection is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await connection.drain()
        connection.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await connection.lost


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class PipelinedScript:
    """One Lua script on an :class:`AutoPipeline`, called like redis-py's
    ``AsyncScript``: ``await script(keys=[...], args=[...])``.

    EVALSHA first; on NOSCRIPT, SCRIPT LOAD and EVALSHA once more (a NOSCRIPT reply
    means the script did not run). ``gate`` is checked again when the call had to wait
    for a (re)connection, after ``on_connect`` ran.
    """

    __slots__ = ("_client", "_gate", "script", "sha")

    def __init__(
        self, client: AutoPipeline, script: str, *, gate: Callable[[], None] | None = None
    ) -> None:
        self._client = client
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self._gate = gate

    async def __call__(
        self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None
    ) -> Any:
        client = self._client
        keys = keys or ()
        command = ("EVALSHA", self.sha, len(keys), *keys, *(args or ()))
        if client.connection is None:
            await client.connect()
            if self._gate is not None:
                self._gate()
        try:
            return await client.send(command)
        except redis.exceptions.NoScriptError:
            client.stats.reloads += 1
            self.sha = await client.load_script(self.script)
            retry = ("EVALSHA", self.sha, *command[2:])
            if client.connection is None:
                await client.connect()
                if self._gate is not None:
                    self._gate()
            return await client.send(retry)


def pipelined_scripts(
    client: AutoPipeline,
    *,
    shebang: bool,
    gate: Callable[[], None] | None = None,
    gated: Iterable[str] = (),
) -> Scripts:
    """Every operation script on ``client``, as the :class:`~inventory.store.scripts.Scripts`
    the store takes; scripts named in ``gated`` re-check ``gate`` after a reconnection."""
    gated_names = frozenset(gated)
    by_name: dict[str, PipelinedScript] = {}
    for name in SCRIPT_NAMES:
        source = assemble(name)
        by_name[name] = PipelinedScript(
            client,
            with_shebang(source) if shebang else source,
            gate=gate if name in gated_names else None,
        )
    return Scripts(by_name)
