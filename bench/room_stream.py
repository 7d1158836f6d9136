"""A ticket's Server-Sent Events stream read over a bare asyncio protocol, for the
release-day benchmark's client processes.

The benchmark's clients share the machine with the API they measure: twenty thousand
streams read through aiohttp's client cost those processes more CPU at the sell-out
than the API spends sending the answers, and that CPU came out of the API's two cores.
A phone reads one stream; here a few processes read thousands, so each stream is read
with as little work as HTTP/1.1 allows: one request written at once, the status line
checked, the chunked body decoded and split into events, the connection closed with
the final answer. Nothing of the service is measured by this module, only carried.
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


class _SseProtocol(asyncio.Protocol):
    """Reads one HTTP/1.1 response with a chunked text/event-stream body and hands
    each event's data (a JSON view) to ``on_view``."""

    def __init__(self, request: bytes, on_view: Callable[[View], bool]) -> None:
        self._request = request
        self._on_view = on_view
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._head_done = False
        #: Bytes of the current chunk still to come; -1 = a size line is next.
        self._chunk_left = -1
        self._body = b""
        self.status = 0
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(StreamEnded("dropped", self.status))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _finish(self, how: str) -> None:
        if not self.done.done():
            self.done.set_result(how)
        self.close()

    def _fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(StreamEnded(reason, self.status))
        self.close()

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
            if self.status != 200:
                self._fail(str(self.status))
                return
            self._head_done = True
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
                    self._buffer = b""
                    self._finish("ended")
                    return
                self._chunk_left = size
            if len(buffer) < self._chunk_left + 2:
                break
            self._body += buffer[: self._chunk_left]
            buffer = buffer[self._chunk_left + 2 :]  # the chunk and its CRLF
            self._chunk_left = -1
            if self._events():
                self._buffer = b""
                self._finish("final")
                return
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


async def follow(
    host: str, port: int, path: str, headers: dict[str, str], on_view: Callable[[View], bool]
) -> None:
    """Open the stream at ``path`` and hand each event's view to ``on_view`` until it
    returns True (the answer is final: the connection is closed then). Raises
    :class:`StreamEnded` when the stream ends or fails before that (its status 200
    when the response was one)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await loop.create_connection(
            lambda: _SseProtocol(request, on_view), host, port
        )
    except OSError as error:
        raise StreamEnded("connection_error") from error
    try:
        how = await protocol.done
    finally:
        protocol.close()
    if how != "final":
        raise StreamEnded("ended", protocol.status)
