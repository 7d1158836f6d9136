"""A ticket's Server-Sent Events stream read over a bare asyncio protocol, for the
release-day benchmark's client processes.

The benchmark's clients share the machine with the API they measure: twenty thousand
streams read through aiohttp's client cost those processes more CPU at the sell-out
than the API spends sending the answers, and that CPU came out of the API's two cores.
A phone reads one stream; here a few processes read thousands, so each stream is read
with as little work as HTTP/1.1 allows: one request written at once, the status line
checked, the chunked body decoded and split into events, the connection closed with
the final answer.

An admitted patient reserves on its stream's own connection once the stream has ended
(as a browser reuses a kept-alive connection from its pool): an API process at its
open-file limit cannot take a new connection, and a reserve waiting for one is the
admitted patient's time lost. Nothing of the service is measured by this module, only
carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import orjson

#: One status event's data: the ticket's view.
View = dict[str, Any]


class StreamEnded(Exception):
    """The stream ended before a final answer: refused, dropped or not 200."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The response's status (0: none was read).
        self.status = status


class _HttpProtocol(asyncio.Protocol):
    """One connection: a request whose chunked text/event-stream answer is handed over
    event by event to ``on_view``, then (when kept) requests answered with a
    Content-Length body."""

    def __init__(self, request: bytes, on_view: Callable[[View], bool]) -> None:
        self._request = request
        self._on_view = on_view
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._head_done = False
        #: Bytes of the current chunk still to come; -1 = a size line is next.
        self._chunk_left = -1
        self._body = b""
        #: The answer's Content-Length (a plain response), -1 = a chunked stream.
        self._length = -1
        #: on_view said the last event was final: the stream's end is all that is left.
        self.final = False
        self.status = 0
        loop = asyncio.get_running_loop()
        #: "final" (on_view said so), "ended" (the stream ended before), or an error.
        self.done: asyncio.Future[str] = loop.create_future()
        #: True once the stream's last chunk came (the connection is free again),
        #: False when the connection was lost before.
        self.ended: asyncio.Future[bool] = loop.create_future()
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(StreamEnded("dropped", self.status))
        if not self.ended.done():
            self.ended.set_result(False)
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(StreamEnded("dropped", self.status))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(StreamEnded(reason, self.status))
        self.close()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send another request on this (kept) connection; its (status, body)."""
        self._buffer, self._head_done, self._length, self.status = b"", False, 0, 0
        self.answer = asyncio.get_running_loop().create_future()
        if self._transport is None or self._transport.is_closing():
            self.answer.set_exception(StreamEnded("dropped"))
        else:
            self._transport.write(data)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._head_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            try:
                self.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self._fail("malformed")
                return
            self._head_done = True
            if self.answer is not None:
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        self._length = int(line.split(b":", 1)[1])
            elif self.status != 200:
                self._fail(str(self.status))
                return
        if self.answer is not None:
            if len(self._buffer) >= self._length and not self.answer.done():
                self.answer.set_result((self.status, self._buffer[: self._length]))
            return
        self._chunks()

    def _chunks(self) -> None:
        buffer = self._buffer
        while True:
            if self._chunk_left < 0:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(buffer[:line_end].split(b";", 1)[0], 16)
                buffer = buffer[line_end + 2 :]
                if size == 0:
                    # The stream's end (no trailers): the connection is free again.
                    self._buffer = b""
                    if not self.done.done():
                        self.done.set_result("ended")
                    if not self.ended.done():
                        self.ended.set_result(True)
                    return
                self._chunk_left = size
            if len(buffer) < self._chunk_left + 2:
                break
            self._body += buffer[: self._chunk_left]
            buffer = buffer[self._chunk_left + 2 :]  # the chunk and its CRLF
            self._chunk_left = -1
            if not self.final and self._events():
                self.final = True
                if not self.done.done():
                    self.done.set_result("final")
        self._buffer = buffer

    def _events(self) -> bool:
        """Hand over every complete event; True once ``on_view`` says it was final."""
        while True:
            end = self._body.find(b"\n\n")
            if end < 0:
                return False
            event, self._body = self._body[:end], self._body[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data: ") and self._on_view(orjson.loads(line[6:])):
                    return True


def _request_bytes(
    method: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Kept:
    """A stream's connection kept after its final event, for one more request."""

    def __init__(self, protocol: _HttpProtocol, host: str, port: int) -> None:
        self._protocol, self._host, self._port = protocol, host, port

    async def post(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        """POST ``body`` as JSON; the answer's status and JSON body. The connection
        is closed after it (the request says so). Raises :class:`StreamEnded` when
        the connection is gone."""
        data = orjson.dumps(body)
        request = _request_bytes(
            "POST",
            self._host,
            self._port,
            path,
            headers | {"Content-Type": "application/json", "Connection": "close"},
            data,
        )
        try:
            status, answer = await self._protocol.request(request)
        finally:
            self._protocol.close()
        return status, orjson.loads(answer) if answer else None


async def follow(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    on_view: Callable[[View], bool],
    *,
    keep: Callable[[], bool] = lambda: False,
) -> Kept | None:
    """Open the stream at ``path`` and hand each event's view to ``on_view`` until it
    returns True (the answer is final). The connection is then closed, unless
    ``keep()`` says otherwise: then the stream's end is awaited and the connection
    returned for one more request. Raises :class:`StreamEnded` when the stream ends
    or fails before a final answer (its status 200 when the response was one)."""
    request = _request_bytes("GET", host, port, path, headers | {"Accept": "text/event-stream"})
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await loop.create_connection(
            lambda: _HttpProtocol(request, on_view), host, port
        )
    except OSError as error:
        raise StreamEnded("connection_error") from error
    try:
        how = await protocol.done
    except BaseException:
        protocol.close()
        raise
    if how != "final":
        protocol.close()
        raise StreamEnded("ended", protocol.status)
    if not keep():
        protocol.close()
        return None
    # The connection is reused once the stream has ended (its last chunk came).
    try:
        async with asyncio.timeout(5):
            ended = await protocol.ended
    except TimeoutError:
        ended = False
    if not ended:
        protocol.close()
        return None
    return Kept(protocol, host, port)
