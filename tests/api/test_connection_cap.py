"""The cap on open connections (inventory/api/server.py): past it a new connection is
closed as soon as it is accepted, counted and logged, so the process keeps files for
its own Redis and Postgres connections; connections already open are served, and
room is made again as connections close."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from inventory.api.server import (
    CONNECTION_HEADROOM,
    MIN_CONNECTIONS,
    ApiRunner,
    connection_cap,
)
from tests.api.conftest import ApiServer, configured_api
from tests.databases import Databases

CAP = 6


@pytest.fixture(scope="module")
def capped_api(
    redis_server: Any, databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    settings = {"INVENTORY_MAX_CONNECTIONS": str(CAP)}
    folder = tmp_path_factory.mktemp("capped")
    with configured_api(redis_server.url, databases, folder, settings) as server:
        yield server


def _connect(api: ApiServer) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _get(connection: socket.socket, path: str) -> bytes:
    """One keep-alive GET on ``connection``; the answer's head and body (b"" when the
    server closed the connection instead: a close with the request unread may reach the
    client as a reset)."""
    try:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    except (BrokenPipeError, ConnectionResetError):
        return b""
    received = b""
    while b"\r\n\r\n" not in received:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            return b""
        if not chunk:
            return received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def _refused_total(api: ApiServer) -> float:
    with _connect(api) as connection:
        text = _get(connection, "/metrics").decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("inventory_connections_refused_total ")
    )


def test_connections_past_the_cap_are_closed_and_the_open_ones_served(
    capped_api: ApiServer,
) -> None:
    before = _refused_total(capped_api)
    held = [_connect(capped_api) for _ in range(CAP)]
    try:
        for connection in held:  # each is served (and stays open: keep-alive)
            assert _get(connection, "/healthz").startswith(b"HTTP/1.1 200")
        extra = _connect(capped_api)
        with extra:
            extra.settimeout(5)
            assert _get(extra, "/healthz") == b""  # closed at once, nothing answered
        assert _get(held[0], "/healthz").startswith(b"HTTP/1.1 200")
    finally:
        for connection in held:
            connection.close()
    # Room again once connections close.
    deadline = time.monotonic() + 10
    while True:
        with _connect(capped_api) as connection:
            if _get(connection, "/healthz").startswith(b"HTTP/1.1 200"):
                break
        assert time.monotonic() < deadline, "no room after the connections closed"
        time.sleep(0.1)
    assert _refused_total(capped_api) >= before + 1
    log = Path(capped_api.log_path).read_text(errors="replace")
    assert "http.connections_refused" in log


def test_the_cap_keeps_files_for_the_process() -> None:
    assert connection_cap(100, 20_000) == 100  # configured
    assert connection_cap(0, 20_000) == 20_000 - CONNECTION_HEADROOM
    assert connection_cap(0, 1_024) == 1_024 - CONNECTION_HEADROOM
    assert connection_cap(0, 256) == MIN_CONNECTIONS
    assert connection_cap(0, resource.RLIM_INFINITY) == 0  # no limit, no cap


async def test_a_connection_closed_while_its_handler_runs_frees_its_place_at_once() -> None:
    """A stream the sell-out answered is closed at once and its handler ends later (the
    handlers are woken to end in paced batches): its place under the cap is free from
    the close, not from the handler's end. Here a handler closes its connection, then
    waits; with a cap of 2, two more connections are served at the same time."""
    closed = asyncio.Event()
    finish = asyncio.Event()
    entered: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]
    answer_now = asyncio.Event()

    async def answer_then_linger(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        assert request.transport is not None
        request.transport.close()
        closed.set()
        await finish.wait()  # the handler runs on after its connection closed
        return response

    async def held(request: web.Request) -> web.Response:
        entered[int(request.query["n"])].set()
        await answer_now.wait()  # both connections are open at once
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/linger", answer_then_linger)
    app.router.add_get("/held", held)
    runner = ApiRunner(app, max_connections=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def get(path: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            request = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            return await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            return b""  # refused: closed as soon as accepted
        finally:
            writer.close()

    try:
        await get("/linger")
        await asyncio.wait_for(closed.wait(), 5)
        # One after the other (a cap counts a connection once it is set up; connections
        # accepted in the same instant are counted together just after).
        first = asyncio.create_task(get("/held?n=0"))
        await asyncio.wait_for(entered[0].wait(), 5)
        second = asyncio.create_task(get("/held?n=1"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(entered[1].wait(), 5)
        answer_now.set()
        assert [a[:15] for a in await asyncio.gather(first, second)] == [b"HTTP/1.1 200 OK"] * 2
    finally:
        finish.set()
        answer_now.set()
        await runner.cleanup()
