"""The crowd: patients pressing "book" at the same instant, each retrying as told.

Every patient sends one reserve (``POST /v1/holds``) for the same slot at the crowd's
start, with its own token, patient, ``Idempotency-Key`` (the same on every retry, as a
real app retries) and client address (in ``X-Forwarded-For``, as the ingress would
write it, so the per-address limit sees distinct patients). Then, per answer:

- **final**: 201 (a hold), 409 ``sold_out``, or any other answer that is not a
  "come back later" (a 4xx, a 500): the patient is done;
- **retry**: 503 (any code) and 429, and a 409 ``idempotency_key_in_use``: the patient
  comes back after the answer's ``Retry-After`` (1 s when it has none);
- a connection lost with the request in flight: the patient comes back after 1 s.

A patient still without a final answer at the deadline gives up.

The client is one asyncio process with a bounded set of keep-alive connections (one
request in flight on each, no pipelining), written on raw protocols and pre-built
request bytes so that it is cheap per request: the patients waiting for a free
connection queue in the client, as they would in the network and the ingress in front
of the API. Its CPU time is measured and reported; a client above 90 % of a core may
have been the bottleneck.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, cast

_PATH = b"/v1/holds"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
_RETRY_AFTER = re.compile(rb"\r\nretry-after: *(\d+)", re.IGNORECASE)
_CODE = re.compile(rb'"code" *: *"([^"]*)"')
_HOLD_ID = re.compile(rb'"hold_id" *: *"([^"]*)"')

#: Retry statuses: the service asks the patient to come back.
RETRY_STATUSES = frozenset({429, 503})
#: A 409 with this code is "your first request is still running": come back, too.
IN_USE = "idempotency_key_in_use"
#: Busier than this (% of one core), the client may have limited the run.
CLIENT_BUSY_PCT = 90.0
#: Seconds a patient waits after losing its connection mid-request.
LOST_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Patient:
    """One patient's fixed request: who, for whom, with which key, from where."""

    token: str
    patient_id: str
    address: str


def build_request(host: str, slot_id: str, key: str, patient: Patient) -> bytes:
    """The patient's reserve as bytes (sent unchanged on every retry)."""
    body = (
        b'{"slot_id":"'
        + slot_id.encode()
        + b'","patient_id":"'
        + patient.patient_id.encode()
        + b'","channel":"wechat"}'
    )
    head = (
        b"POST " + _PATH + b" HTTP/1.1\r\n"
        b"Host: " + host.encode() + b"\r\n"
        b"Authorization: Bearer " + patient.token.encode() + b"\r\n"
        b"Idempotency-Key: " + key.encode() + b"\r\n"
        b"X-Forwarded-For: " + patient.address.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


def address_of(index: int) -> str:
    """A distinct private IPv4 address per patient (10.0.0.1 onwards)."""
    n = index + 1
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass(slots=True)
class _State:
    """One patient during the run."""

    request: bytes
    requests: int = 0
    #: Seconds from the crowd's start to the final answer (None: none yet).
    final_at: float | None = None
    final: str = ""
    last_status: int = 0
    hold_id: str = ""


@dataclass
class CrowdResult:
    """What the client saw. Times are seconds from the crowd's start."""

    patients: int
    units: int
    connections: int
    deadline_s: float
    #: Per patient: seconds to its final answer, or None (gave up at the deadline).
    final_at: list[float | None]
    #: Per patient: its final answer ("201", "409 sold_out", ...) or "" (none).
    finals: list[str]
    #: Per patient: requests sent.
    requests: list[int]
    #: Per patient: the status of its last answer (0: none, or its connection was lost).
    last_status: list[int]
    #: Distinct hold ids answered with 201, with the time of each first 201.
    holds: dict[str, float]
    #: Every answer by status and code ("503 overloaded", "201", ...).
    answers: dict[str, int]
    #: Connections lost with a request in flight, and connection attempts that failed.
    lost: int
    connect_errors: int
    #: Retry-After values received (seconds -> count).
    retry_after: dict[int, int]
    #: Per second from the start: requests sent, and answers by class.
    timeline: list[dict[str, int]]
    wall_s: float
    client_cpu_s: float
    first_sold_out_s: float | None = None
    #: The crowd's start on the wall clock (seconds since the epoch).
    start_wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        """Patients with a final answer."""
        return sum(1 for t in self.final_at if t is not None)

    @property
    def sold(self) -> int:
        """Distinct holds the crowd was given."""
        return len(self.holds)

    @property
    def sold_out_s(self) -> float | None:
        """When the last unit was answered with its hold (None: not every unit was)."""
        if len(self.holds) < self.units:
            return None
        return sorted(self.holds.values())[self.units - 1]

    @property
    def all_final_s(self) -> float | None:
        """When the last patient got a final answer (None: someone gave up)."""
        times = [t for t in self.final_at if t is not None]
        if len(times) < self.patients or not times:
            return None
        return max(times)

    def percentile_s(self, fraction: float) -> float:
        """Nearest-rank percentile of time-to-final-answer over every patient; a
        patient without one counts as infinitely late (``inf``)."""
        times = sorted(math.inf if t is None else t for t in self.final_at)
        if not times:
            return 0.0
        rank = max(1, math.ceil(fraction * len(times)))
        return times[rank - 1]

    def count(self, prefix: str) -> int:
        """Answers whose status (and code) start with ``prefix``."""
        return sum(n for key, n in self.answers.items() if key.startswith(prefix))

    @property
    def still_retrying(self) -> dict[str, int]:
        """Patients without a final answer, by their last answer's status."""
        found: collections.Counter[str] = collections.Counter()
        for final, status in zip(self.finals, self.last_status, strict=True):
            if not final:
                found[str(status) if status else "none"] += 1
        return dict(found)

    @property
    def client_busy_pct(self) -> float:
        return 100.0 * self.client_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, crowd: Crowd) -> None:
        self.crowd = crowd
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.patient = -1
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are ones.
        self.transport = cast(asyncio.Transport, transport)
        self.alive = True

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            self.buffer = buffer
            return
        head = buffer[: head_end + 2]
        match = _CONTENT_LENGTH.search(head)
        end = head_end + 4 + (int(match.group(1)) if match else 0)
        if len(buffer) < end:
            self.buffer = buffer
            return
        self.buffer = buffer[end:]
        self.crowd.answered(self, head, buffer[head_end + 4 : end])

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.crowd.lost_connection(self)


class Crowd:
    """Runs the crowd over ``connections`` connections until every patient has a final
    answer or the deadline passes."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        slot_id: str,
        key_prefix: str,
        patients: list[Patient],
        units: int,
        connections: int,
        deadline_s: float,
    ) -> None:
        authority = f"{host}:{port}"
        self.host, self.port = host, port
        self.units = units
        self.connections = connections
        self.deadline_s = deadline_s
        self.states = [
            _State(build_request(authority, slot_id, f"{key_prefix}-{i}", p))
            for i, p in enumerate(patients)
        ]
        self.ready: collections.deque[int] = collections.deque()
        self.idle: list[_Connection] = []
        #: Every connection opened (replacements of lost ones included), closed at the end.
        self.conns: list[_Connection] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.holds: dict[str, float] = {}
        self.answers: collections.Counter[str] = collections.Counter()
        self.retry_after: collections.Counter[int] = collections.Counter()
        self.timeline: list[collections.Counter[str]] = [
            collections.Counter() for _ in range(int(deadline_s) + 2)
        ]
        self.lost = 0
        self.connect_errors = 0
        self.pending = len(patients)
        self.first_sold_out: float | None = None
        self.finished = False
        self.start = 0.0
        self.start_wall = 0.0
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()

    def _now(self) -> float:
        return self.loop.time() - self.start

    def _second(self, now: float) -> collections.Counter[str]:
        return self.timeline[min(int(now), len(self.timeline) - 1)]

    async def _connect(self) -> _Connection | None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self.connect_errors += 1
            return None
        self.conns.append(conn)
        return conn

    async def _open(self, count: int) -> list[_Connection]:
        """Open ``count`` connections, at most 200 handshakes at a time."""
        opened: list[_Connection] = []
        for first in range(0, count, 200):
            batch = await asyncio.gather(*(self._connect() for _ in range(min(200, count - first))))
            opened += [conn for conn in batch if conn is not None]
        return opened

    async def run(self) -> CrowdResult:
        """Open the connections, release the crowd, wait for the end; the result."""
        opened = await self._open(self.connections)
        if not opened:
            raise RuntimeError(f"could not connect to {self.host}:{self.port}")
        cpu_before = time.process_time()
        self.start = self.loop.time()
        self.start_wall = time.time()
        self.idle = list(opened)
        self.ready.extend(range(len(self.states)))
        deadline = self.loop.call_at(self.start + self.deadline_s, self._finish)
        self._dispatch()
        await self.done
        deadline.cancel()
        wall = self._now()
        cpu = time.process_time() - cpu_before
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        states = self.states
        return CrowdResult(
            patients=len(states),
            units=self.units,
            connections=len(opened),
            deadline_s=self.deadline_s,
            final_at=[s.final_at for s in states],
            finals=[s.final for s in states],
            requests=[s.requests for s in states],
            last_status=[s.last_status for s in states],
            holds=dict(self.holds),
            answers=dict(self.answers),
            lost=self.lost,
            connect_errors=self.connect_errors,
            retry_after=dict(sorted(self.retry_after.items())),
            timeline=[dict(second) for second in self.timeline[: math.ceil(wall) + 1]],
            wall_s=wall,
            client_cpu_s=cpu,
            first_sold_out_s=self.first_sold_out,
            start_wall=self.start_wall,
        )

    def _dispatch(self) -> None:
        ready, idle = self.ready, self.idle
        while ready and idle and not self.finished:
            conn = idle.pop()
            if not conn.alive or conn.transport is None:
                continue
            index = ready.popleft()
            state = self.states[index]
            conn.patient = index
            state.requests += 1
            self._second(self._now())["sent"] += 1
            conn.transport.write(state.request)

    def answered(self, conn: _Connection, head: bytes, body: bytes) -> None:
        index, conn.patient = conn.patient, -1
        if index < 0 or self.finished:
            return
        now = self._now()
        state = self.states[index]
        status = int(head[9:12])
        state.last_status = status
        code = ""
        if status >= 400:
            found = _CODE.search(body)
            code = found.group(1).decode() if found else ""
        label = f"{status} {code}" if code else str(status)
        self.answers[label] += 1
        second = self._second(now)
        retry = status in RETRY_STATUSES or (status == 409 and code == IN_USE)
        if retry:
            second[str(status)] += 1
            found_after = _RETRY_AFTER.search(head)
            delay = int(found_after.group(1)) if found_after else 1
            self.retry_after[delay] += 1
            self.loop.call_later(delay, self._again, index)
        else:
            second["final"] += 1
            state.final_at = now
            state.final = label
            if status == 201:
                hold = _HOLD_ID.search(body)
                hold_id = hold.group(1).decode() if hold else f"?{index}"
                state.hold_id = hold_id
                self.holds.setdefault(hold_id, now)
            elif code == "sold_out" and self.first_sold_out is None:
                self.first_sold_out = now
            self.pending -= 1
            if self.pending == 0:
                self._finish()
                return
        self.idle.append(conn)
        self._dispatch()

    def lost_connection(self, conn: _Connection) -> None:
        if self.finished:
            return
        index, conn.patient = conn.patient, -1
        if index >= 0:
            self.lost += 1
            self.states[index].last_status = 0
            self.loop.call_later(LOST_RETRY_S, self._again, index)
        # Keep the connection count: open a new one in place of the lost one.
        task = self.loop.create_task(self._replace())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _replace(self) -> None:
        conn = await self._connect()
        if conn is not None and not self.finished:
            self.idle.append(conn)
            self._dispatch()

    def _again(self, index: int) -> None:
        if self.finished:
            return
        self.ready.append(index)
        self._dispatch()

    def _finish(self) -> None:
        self.finished = True
        if not self.done.done():
            self.done.set_result(None)
