"""The API's HTTP server: aiohttp's, with problem+json answers for what its parser
refuses (:class:`~inventory.api.malformed.ProblemRequestHandler`) and a cap on open
connections that keeps files for the process's own connections.

Every connection is a file, and a process may open only so many (its open-file limit).
A waiting room's crowd holds one connection per patient; without a cap the crowd can
take every file, and then the process cannot open what it needs to answer anyone: a
new connection to Postgres or Redis fails with "too many open files" and a reserve of
an admitted patient is answered 503. Past ``max_connections`` a new connection is
closed as soon as it is accepted (its client sees the connection closed and tries
again), so ``open-file limit - max_connections`` files stay free for the pools. The
refusals are counted (``inventory_connections_refused_total``) and logged at most
every ``REFUSAL_LOG_EVERY_S``.

A connection counts from when it is set up until it closes (not until its handler
ends). Connections accepted in the same instant are set up together just after, so a
burst may pass the cap by up to the listen backlog (128 by default): well within the
files kept free.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from inventory.api.malformed import ProblemRequestHandler
from inventory.ops import metrics

log = structlog.get_logger(__name__)

#: Files kept free under the open-file limit when no cap is configured: the Redis and
#: Postgres pools (64 and 20 by default), the HIS and payment clients, logs.
CONNECTION_HEADROOM: Final = 512
#: The smallest cap derived from the open-file limit (a tiny limit still serves).
MIN_CONNECTIONS: Final = 64
#: At most one log line per this many seconds while connections are refused.
REFUSAL_LOG_EVERY_S: Final = 10.0


def connection_cap(configured: int, open_files_limit: int | None = None) -> int:
    """The cap on open connections: ``configured`` when set (> 0), else the open-file
    limit (by default this process's soft limit now) less :data:`CONNECTION_HEADROOM`
    (at least :data:`MIN_CONNECTIONS`); 0 (no cap) when the limit is infinite."""
    if configured > 0:
        return configured
    if open_files_limit is None:
        open_files_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files_limit == resource.RLIM_INFINITY or open_files_limit <= 0:
        return 0
    return max(MIN_CONNECTIONS, open_files_limit - CONNECTION_HEADROOM)


class _Refused(asyncio.Protocol):
    """A connection past the cap: closed at once, its file freed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _ApiServer(web.Server):
    """aiohttp's server, handing each connection a :class:`ProblemRequestHandler`, or
    :class:`_Refused` past the cap."""

    max_connections: int = 0
    #: Connections open now. aiohttp's own list keeps a connection until its handler
    #: ends; a stream the sell-out answered is closed at once (its file is free) and its
    #: handler ends up to seconds later, so that list would refuse patients for files
    #: that are free.
    open_connections = 0
    _refused_since_log = 0
    _last_log = 0.0

    def __call__(self) -> Any:
        if self.max_connections and self.open_connections >= self.max_connections:
            self._refuse()
            return _Refused()
        handler = super().__call__()
        # The same object with the one method changed (same slots, no state of its own):
        # aiohttp builds it with every option it was given.
        handler.__class__ = ProblemRequestHandler
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open_connections += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        # aiohttp's handler reports its connection lost once (then forgets its server).
        self.open_connections -= 1
        super().connection_lost(handler, exc)

    def _refuse(self) -> None:
        metrics.CONNECTIONS_REFUSED.inc()
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= REFUSAL_LOG_EVERY_S:
            log.warning(
                "http.connections_refused",
                refused=self._refused_since_log,
                max_connections=self.max_connections,
            )
            self._refused_since_log = 0
            self._last_log = now


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers unparsable requests with problem+json and
    closes connections past ``max_connections`` (0: no cap)."""

    def __init__(self, app: web.Application, *, max_connections: int = 0, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ApiServer
        assert isinstance(server, _ApiServer)
        server.max_connections = self._max_connections
        return server
