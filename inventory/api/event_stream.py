"""Server-Sent Events: one status event's bytes, and sending one at once.

A stream's events normally go through ``StreamResponse.write`` from the stream's own
handler. The sell-out is the exception: one state change answers every waiting
stream of a release at once, and waking 20,000 handlers so that each writes its own
answer put the last answer seconds behind the first. :func:`send_now` lets the
watcher's one pass write each answer itself, in order, without a wake-up: the event
goes to the connection's transport framed as the response frames its body (a chunk of
the chunked encoding on HTTP/1.1, bytes as they are on HTTP/1.0). The handler, woken
after, only ends the response.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import HttpVersion11, web


def event_bytes(view: dict[str, Any]) -> bytes:
    """A ``status`` event whose data is ``view``."""
    return b"event: status\ndata: " + orjson.dumps(view) + b"\n\n"


def send_now(request: web.Request, response: web.StreamResponse, data: bytes) -> bool:
    """Write ``data`` to the stream at once (no wait for the transport's buffer to
    drain); False when the client is gone or the response is not streaming yet."""
    transport = request.transport
    if transport is None or transport.is_closing() or not response.prepared:
        return False
    if request.version >= HttpVersion11:
        # StreamResponse chunks a body of unknown length on HTTP/1.1: frame as it does.
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
    else:
        transport.write(data)
    return True
