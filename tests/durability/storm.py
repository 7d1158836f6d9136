"""A small release storm against a running API and worker, for the Redis fault tests.

Real processes (``inventory serve``, ``inventory worker``) on a Redis given by URL (one
server or a Sentinel group) and a database of their own; patients register, reserve,
confirm (some release) and retry 503s as a client would, and every answer is timed so a
test can say how long patients saw which refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from inventory.devtools.servers import free_port
from inventory.store import keys

from ..api.conftest import ApiServer, api_env, launch_api, stop_api
from ..api.helpers import Catalogue, register_patient
from ..databases import Databases
from .stack import start_worker

#: Refusals that mean "the store is not there or not trusted yet": the patient retries.
UNAVAILABLE = ("store_unavailable", "store_unverified", "store_fenced", "overloaded")


@dataclass
class Stack:
    """An API process and a worker process sharing one Redis URL and one database."""

    api: ApiServer
    worker: subprocess.Popen[bytes]
    worker_log: Path
    env: dict[str, str]

    def run_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``inventory <args>`` with the stack's environment."""
        return subprocess.run(
            [sys.executable, "-m", "inventory", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited: {log.read_text(errors='replace')[-3000:]}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout} s: {log.read_text(errors='replace')[-3000:]}")


@contextlib.asynccontextmanager
async def running_stack(redis_url: str, databases: Databases, root: Path) -> AsyncIterator[Stack]:
    """Start a worker and an API on ``redis_url`` and a database of their own; stop both
    at the end."""
    database_url = await databases.create()
    port = free_port()
    env = api_env(redis_url, database_url, port)
    env["INVENTORY_WORKER_METRICS_PORT"] = str(free_port())
    worker_log = root / "worker.log"
    worker = await asyncio.to_thread(start_worker, env, worker_log)
    try:
        api = await asyncio.to_thread(launch_api, env, root / "api.log")
        try:
            # /readyz is 200 once the worker's fence has verified the store.
            await asyncio.to_thread(_wait_ready, f"{api.url}/readyz", api.process, api.log_path, 30)
            yield Stack(api=api, worker=worker, worker_log=worker_log, env=env)
        finally:
            stop_api(api.process)
    finally:
        stop_api(worker)


@dataclass
class Answer:
    """One HTTP answer the storm got."""

    at: float
    op: str
    status: int
    code: str
    tag: str


@dataclass
class Storm:
    """Patients reserving, confirming and releasing, retrying 503s until ``stop``."""

    api: ApiServer
    slots: dict[str, str]  # slot id -> tag
    patients: list[tuple[str, str]]  # (account, patient id)
    release_share: float = 0.2
    answers: list[Answer] = field(default_factory=list)
    #: hold id -> (slot id, payment ref) of every confirm answered 200.
    confirmed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Tags patients may not touch right now (see ``quiet``).
    quiet: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def codes(self, since: float = 0.0) -> Counter[str]:
        return Counter(f"{a.op} {a.status} {a.code}" for a in self.answers if a.at >= since)

    async def _call(
        self,
        http: aiohttp.ClientSession,
        op: str,
        tag: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        try:
            async with http.request(
                method, self.api.url + path, json=body, headers=headers
            ) as answer:
                data: dict[str, Any] = await answer.json(content_type=None) or {}
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status, data = 599, {"code": "no_answer"}
        self.answers.append(Answer(time.monotonic(), op, status, str(data.get("code", "")), tag))
        return status, data

    async def _patient(self, http: aiohttp.ClientSession, account: str, patient: str) -> None:
        headers = self.api.headers(account)
        while not self.stop.is_set():
            choices = [s for s, t in self.slots.items() if t not in self.quiet]
            if not choices:
                await asyncio.sleep(0.05)
                continue
            slot = random.choice(choices)
            tag = self.slots[slot]
            key = uuid.uuid4().hex
            # Reserve, retrying refusals of an unavailable store with the same key.
            while not self.stop.is_set():
                status, data = await self._call(
                    http,
                    "reserve",
                    tag,
                    "POST",
                    "/v1/holds",
                    headers | {"Idempotency-Key": key},
                    {"slot_id": slot, "patient_id": patient, "channel": "app"},
                )
                if status == 503 or status == 599:
                    await asyncio.sleep(random.uniform(0.2, 0.4))  # a client's back-off
                    continue
                break
            if status != 201:
                if data.get("code") in ("slot_sold_out", "sold_out"):
                    self.slots = {s: t for s, t in self.slots.items() if s != slot}
                continue
            hold_id = str(data["hold_id"])
            await asyncio.sleep(random.uniform(0.05, 0.3))  # paying
            if random.random() < self.release_share:
                await self._call(http, "release", tag, "DELETE", f"/v1/holds/{hold_id}", headers)
                continue
            ref = f"wx-{uuid.uuid4().hex[:16]}"
            while not self.stop.is_set():
                status, data = await self._call(
                    http,
                    "confirm",
                    tag,
                    "POST",
                    f"/v1/holds/{hold_id}/confirm",
                    headers,
                    {"payment_ref": ref},
                )
                if status == 503 or status == 599:
                    await asyncio.sleep(random.uniform(0.2, 0.4))
                    continue
                break
            if status == 200:
                self.confirmed[hold_id] = (slot, ref)
                return  # booked: this patient is done
            # The hold was lost with the store (a hold may be lost): reserve again.

    async def run(self, arrival_gap_s: float = 0.03) -> None:
        """Patients arrive one every ``arrival_gap_s`` until ``stop``; wait for them."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            tasks = []
            for account, patient in self.patients:
                if self.stop.is_set():
                    break
                tasks.append(asyncio.create_task(self._patient(http, account, patient)))
                await asyncio.sleep(arrival_gap_s)
            await asyncio.gather(*tasks)


async def seed(api: ApiServer, *, hospitals: int, capacities: list[int], patients: int) -> Any:
    """``hospitals`` hospitals, each one department-day (a tag) with slots of
    ``capacities``; ``patients`` patients, each under an account of its own.
    Returns (slot id -> tag, slot id -> capacity, [(account, patient id)])."""
    slots: dict[str, str] = {}
    capacity: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(hospitals):
            catalogue = await Catalogue(api, http).create(policy={"one_per_day": False})
            _, ids, day = await catalogue.schedule(capacities)
            tag = keys.department_day_tag(catalogue.department_id, day)
            for slot_id, cap in zip(ids, capacities, strict=True):
                slots[slot_id] = tag
                capacity[slot_id] = cap
        accounts = [f"acct-{uuid.uuid4().hex[:10]}" for _ in range(patients)]
        semaphore = asyncio.Semaphore(8)

        async def one(account: str) -> tuple[str, str]:
            async with semaphore:
                return account, await register_patient(api, http, account)

        people = list(await asyncio.gather(*(one(a) for a in accounts)))
    return slots, capacity, people


async def booked_per_slot(database_url: str) -> dict[str, int]:
    """Confirmed bookings per slot in Postgres."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT slot_id, count(*) AS n FROM bookings"
            " WHERE status NOT IN ('cancelled', 'rejected') GROUP BY slot_id"
        )
    finally:
        await connection.close()
    return {str(r["slot_id"]): int(r["n"]) for r in rows}


async def tag_sequences(database_url: str) -> dict[str, int]:
    """Each tag's highest seq Postgres recorded."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT tag, last_seq FROM tag_sequences")
    finally:
        await connection.close()
    return {str(r["tag"]): int(r["last_seq"]) for r in rows}


async def confirmed_in_postgres(database_url: str, hold_ids: list[str]) -> set[str]:
    """The hold ids among ``hold_ids`` whose booking Postgres holds (not cancelled)."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT id FROM bookings"
            " WHERE status NOT IN ('cancelled', 'rejected') AND id = ANY($1)",
            hold_ids,
        )
    finally:
        await connection.close()
    return {str(r["id"]) for r in rows}


def refusal_windows(answers: list[Answer], since: float) -> dict[str, tuple[int, float, float]]:
    """Per 503 code after ``since``: (count, first, last) in seconds after ``since``."""
    found: dict[str, tuple[int, float, float]] = {}
    for answer in answers:
        if answer.at < since or answer.status not in (503, 599):
            continue
        count, first, last = found.get(answer.code, (0, float("inf"), 0.0))
        found[answer.code] = (
            count + 1,
            min(first, answer.at - since),
            max(last, answer.at - since),
        )
    return found


def print_windows(title: str, windows: dict[str, tuple[int, float, float]]) -> None:
    """What patients saw, for the test log (pytest -s) and the runbook's figures."""
    print(f"\n{title}")
    for code, (count, first, last) in sorted(windows.items(), key=lambda kv: kv[1][1]):
        print(f"  503 {code:<18} {count:>5} answers, from {first:6.2f} s to {last:6.2f} s")
