"""The Python load generator, closed loop ("max") or paced, in a process of its own
(``python -m bench.http.child load``): raw asyncio protocols, one request in flight per
keep-alive connection, latency measured from the write."""

from __future__ import annotations

import array
import asyncio
import random
import re
import time
from pathlib import Path
from typing import Any

from bench.http.plan import Plan, RequestMaker
from bench.stats import percentile_ms

_CONTENT_LENGTH = re.compile(rb"\r\n[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]: *(\d+)")


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time (no pipelining)."""

    def __init__(self, run: _LoadRun) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_ns = 0
        self.due = 0.0
        self.busy = False
        self.alive = True
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            match = _CONTENT_LENGTH.search(buffer, 0, head_end + 2)
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if len(buffer) < end:
                break
            status = int(buffer[9:12])
            buffer = buffer[end:]
            self.run.answered(self, status)
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.run.lost(self, exc)


class _LoadRun:
    """Closed-loop ("max") or paced load over ``connections`` connections."""

    def __init__(
        self,
        plan: Plan,
        *,
        host: str,
        port: int,
        mode: str,
        connections: int,
        seconds: float,
        rate: float,
        start: int,
    ) -> None:
        self.maker = RequestMaker(plan, f"{host}:{port}", start)
        self.host, self.port = host, port
        self.mode = mode
        self.connections = connections
        self.seconds = seconds
        self.mean_gap_s = connections / rate if rate > 0 else 0.0
        self.latencies = array.array("q")
        self.statuses: dict[int, int] = {}
        self.socket_errors = 0
        self.first_error: str | None = None
        self.late = 0
        self.deadline = 0.0
        self.conns: list[_HttpConnection] = []
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.rng = random.Random()

    async def run(self) -> dict[str, Any]:
        for _ in range(self.connections):
            _, conn = await self.loop.create_connection(
                lambda: _HttpConnection(self), self.host, self.port
            )
            self.conns.append(conn)
        cpu_before = time.process_time()
        started = self.loop.time()
        self.deadline = started + self.seconds
        for conn in self.conns:
            if self.mode == "max":
                self._send(conn)
            else:
                conn.due = started + self.rng.uniform(0, self.mean_gap_s)
                conn.timer = self.loop.call_at(conn.due, self._send_due, conn)
        self.loop.call_at(self.deadline, self._check_done)
        # Answers to requests still in flight at the deadline are waited for, not counted.
        self.loop.call_at(self.deadline + 10.0, self._finish)
        await self.done
        elapsed = min(self.loop.time(), self.deadline) - started
        cpu = time.process_time() - cpu_before
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        latencies = sorted(self.latencies)
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        errors = sum(self.statuses.values()) - ok + self.socket_errors
        return {
            "requests": len(latencies),
            "ok": ok,
            "errors": errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "first_error": self.first_error,
            "elapsed_s": self.seconds if elapsed <= 0 else max(elapsed, self.seconds),
            "p50_ms": percentile_ms(latencies, 0.50),
            "p99_ms": percentile_ms(latencies, 0.99),
            "late": self.late,
            "used": self.maker.next_index,
            "cpu_s": cpu,
        }

    def _send(self, conn: _HttpConnection) -> None:
        if not conn.alive or conn.transport is None:
            return
        conn.busy = True
        conn.sent_ns = time.perf_counter_ns()
        conn.transport.write(self.maker.next())

    def _send_due(self, conn: _HttpConnection) -> None:
        conn.timer = None
        if self.loop.time() >= self.deadline:
            self._check_done()
            return
        self._send(conn)

    def answered(self, conn: _HttpConnection, status: int) -> None:
        now_ns = time.perf_counter_ns()
        conn.busy = False
        now = self.loop.time()
        if now > self.deadline:
            self._check_done()
            return
        self.latencies.append(now_ns - conn.sent_ns)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 300 and self.first_error is None:
            self.first_error = f"HTTP {status}"
        if self.mode == "max":
            self._send(conn)
            return
        conn.due += self.rng.expovariate(1.0 / self.mean_gap_s)
        if conn.due <= now:
            if now - conn.due > 0.001:
                self.late += 1
            self._send(conn)
        else:
            conn.timer = self.loop.call_at(conn.due, self._send_due, conn)

    def lost(self, conn: _HttpConnection, exc: Exception | None) -> None:
        if self.loop.time() < self.deadline:
            self.socket_errors += 1
            if self.first_error is None:
                self.first_error = f"connection lost: {exc}"
        conn.busy = False
        self._check_done()

    def _check_done(self) -> None:
        if self.loop.time() >= self.deadline and not any(c.busy and c.alive for c in self.conns):
            self._finish()

    def _finish(self) -> None:
        for conn in self.conns:
            if conn.timer is not None:
                conn.timer.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def run_load(
    plan_path: Path,
    *,
    host: str,
    port: int,
    mode: str,
    connections: int,
    seconds: float,
    rate: float,
    start: int,
) -> dict[str, Any]:
    """One phase of load from the plan at ``plan_path``, from request index ``start``;
    returns the phase's raw figures (what the parent reads as one JSON line)."""
    run = _LoadRun(
        Plan.load(plan_path),
        host=host,
        port=port,
        mode=mode,
        connections=connections,
        seconds=seconds,
        rate=rate,
        start=start,
    )
    return await run.run()
