"""Server-Sent Events: one status event's bytes, and sending one at once.

A stream's events normally go through ``StreamResponse.write`` from the stream's own
handler. The sell-out is the exception: one state change answers every waiting
stream of a release at once, and waking 20,000 handlers so that each writes its own
answer put the last answer seconds behind the first. :func:`send_last` lets the
watcher's one pass write each answer itself, in order, without a wake-up: the event
and the body's end go to the connection's transport framed as the response frames its
body (a chunk of the chunked encoding and the last chunk on HTTP/1.1, bytes as they
are on HTTP/1.0), and the connection is closed. The handler, woken after, returns.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import HttpVersion11, web


def event_bytes(view: dict[str, Any]) -> bytes:
    """A ``status`` event whose data is ``view``."""
    return b"event: status\ndata: " + orjson.dumps(view) + b"\n\n"


def send_last(request: web.Request, response: web.StreamResponse, data: bytes) -> bool:
    """Write ``data`` as the stream's last event and its end at once (no wait for the
    transport's buffer to drain), then close the connection: its file is free for
    the next patient's at once, and the handler only has to return. False when the
    client is gone or the response is not streaming yet."""
    transport = request.transport
    if transport is None or transport.is_closing() or not response.prepared:
        return False
    if request.version >= HttpVersion11:
        # StreamResponse chunks a body of unknown length on HTTP/1.1: frame as it
        # does, and end the body (the last chunk) as its write_eof would.
        transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data))
    else:
        transport.write(data)  # HTTP/1.0: the body ends with the connection
    transport.close()  # after the buffered bytes are written
    return True
