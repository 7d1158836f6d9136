"""The cap on open connections (inventory/api/server.py): past it a new connection is
closed as soon as it is accepted, counted and logged, so the process keeps files for
its own Redis and Postgres connections; connections already open are served, and
room is made again as connections close."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inventory.api.server import CONNECTION_HEADROOM, MIN_CONNECTIONS, connection_cap
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
    # Room again once connections close (aiohttp forgets one when its handler ends).
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
