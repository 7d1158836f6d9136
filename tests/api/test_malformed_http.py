"""Requests aiohttp's parser refuses, sent over a raw socket to the real API process:
each is answered 400 problem+json with the stable code ``bad_request`` and a request
id, the connection is closed, and nothing of the request comes back."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from .conftest import ApiServer

SECRET = b"s3cr3t-token-110101199003074735"

MALFORMED = {
    "nul_in_header": b"GET /v1/hospitals HTTP/1.1\r\nHost: a\r\nX-Note: ab\x00"
    + SECRET
    + b"\r\n\r\n",
    "content_length_abc": b"POST /v1/holds HTTP/1.1\r\nHost: a\r\nContent-Length: abc"
    + SECRET
    + b"\r\nContent-Type: application/json\r\n\r\n{}",
    "bad_request_line": b"GET /v1/hospitals " + SECRET + b" HTTP/1.1 extra\r\nHost: a\r\n\r\n",
    "bad_method": b"G\x01T /" + SECRET + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad_version": b"GET / HTTP/9" + SECRET + b"\r\nHost: a\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: a\r\nX-Note : " + SECRET + b"\r\n\r\n",
}


async def _exchange(api: ApiServer, raw: bytes) -> bytes:
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    finally:
        writer.close()


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_request_is_a_problem(api_server: ApiServer, name: str) -> None:
    """400 application/problem+json, code bad_request, an X-Request-Id, the connection
    closed, and neither the bad bytes nor anything else of the request echoed."""
    answer = await _exchange(api_server, MALFORMED[name])
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.split(" ", 2)[:2] in (["HTTP/1.1", "400"], ["HTTP/1.0", "400"]), answer
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert headers["content-type"].startswith("application/problem+json"), headers
    # Closed: read() above returned at the end of the stream (an HTTP/1.0 answer, aiohttp's
    # for a request it could not parse, says so without a Connection header).
    assert headers.get("connection", "close") == "close"
    assert len(headers["x-request-id"]) == 30, headers
    problem = orjson.loads(body)
    assert problem["code"] == "bad_request"
    assert problem["status"] == 400
    assert problem["title"]
    assert SECRET not in answer
    assert b"\x00" not in answer


async def test_the_server_still_serves_after_them(api_server: ApiServer) -> None:
    """A good request on a new connection is served as usual afterwards."""
    for raw in MALFORMED.values():
        await _exchange(api_server, raw)
    answer = await _exchange(
        api_server, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
