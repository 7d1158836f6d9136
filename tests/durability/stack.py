"""A running stack for fault tests: an ``inventory serve`` process and, when asked, an
``inventory worker`` process, on servers the test owns (it kills and restarts them).
Catalogue and patients are made through the API, as a client would."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from inventory.devtools.servers import free_port
from inventory.ops.config import Settings
from tests.api.conftest import ApiServer, api_env, start_api, stop_api
from tests.api.helpers import Catalogue, register_patient


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A child process in a session of its own, its output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``inventory worker`` as a child process, its output appended to ``log_path``."""
    return spawn([sys.executable, "-m", "inventory", "worker"], env, log_path)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers."""
    stop_api(process)


T = TypeVar("T")


@dataclass
class Stack:
    """The API (and the worker) of one test, and what the test needs to drive them."""

    api: ApiServer
    worker_env: dict[str, str]
    worker_log: Path
    worker: subprocess.Popen[bytes] | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.worker = start_worker(self.worker_env, self.worker_log)
        self.processes.append(self.worker)
        return self.worker

    def restart_api(self) -> None:
        """A new API process in place of the old one (nothing remembered in memory)."""
        stop_api(self.api.process)
        self.api.process = start_api(self.api.env, self.api.log_path)

    def close(self) -> None:
        for process in [*self.processes, self.api.process]:
            stop_process(process)


def open_stack(
    redis_url: str,
    database_url: str,
    directory: Path,
    *,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> Stack:
    """Start the API on ``redis_url`` and ``database_url`` (migrated), on ``port`` (a
    free one when None); the worker's environment is the API's."""
    port = port or free_port()
    env = api_env(redis_url, database_url, port)
    env.update(
        {
            "INVENTORY_WORKER_METRICS_PORT": "0",
            "INVENTORY_FENCE_INTERVAL_S": "0.5",
            **(extra_env or {}),
        }
    )
    log_path = directory / "api.log"
    process = start_api(env, log_path)
    environ = {k: v for k, v in env.items() if k.startswith("INVENTORY_")}
    api = ApiServer(
        url=f"http://127.0.0.1:{port}",
        env=env,
        settings=Settings.from_env(environ),
        database_url=database_url,
        log_path=log_path,
        process=process,
    )
    return Stack(api=api, worker_env=dict(env), worker_log=directory / "worker.log")


async def reserve(
    stack: Stack, http: aiohttp.ClientSession, account: str, patient: str, slot: str
) -> tuple[int, dict[str, Any]]:
    """POST /v1/holds: (status, body)."""
    async with http.post(
        stack.api.url + "/v1/holds",
        json={"slot_id": slot, "patient_id": patient, "channel": "app"},
        headers={**stack.api.headers(account), "Idempotency-Key": os.urandom(8).hex()},
    ) as answer:
        return answer.status, await answer.json(content_type=None)


async def patients(
    stack: Stack, http: aiohttp.ClientSession, count: int, *, prefix: str = "acct"
) -> list[tuple[str, str]]:
    """``count`` (account, patient) pairs registered through the API."""
    accounts = [f"{prefix}-{os.urandom(4).hex()}" for _ in range(count)]
    ids = await asyncio.gather(*(register_patient(stack.api, http, a) for a in accounts))
    return list(zip(accounts, ids, strict=True))


async def catalogue(stack: Stack, http: aiohttp.ClientSession, capacity: int) -> str:
    """A released schedule with one slot of ``capacity``; the slot id."""
    shop = await Catalogue(stack.api, http).create()
    _, (slot,), _ = await shop.schedule([capacity])
    return slot


async def wait_until(check: Callable[[], Any], *, timeout_s: float, every_s: float = 0.1) -> float:
    """Await ``check()`` until it returns truthy; the seconds it took (AssertionError
    after ``timeout_s``)."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(every_s)


async def wait_verified(redis_url: str, *, timeout_s: float = 30.0) -> None:
    """Wait until the fence has verified the Redis server at ``redis_url`` (the API's
    gate then opens)."""
    from redis.asyncio import Redis

    from inventory.recovery.fence import server_run_id
    from inventory.store import keys

    client = Redis.from_url(redis_url, decode_responses=True)

    async def verified() -> bool:
        return bool(await client.get(keys.VERIFIED_RUN_KEY) == await server_run_id(client))

    try:
        await wait_until(verified, timeout_s=timeout_s)
    finally:
        await client.aclose()


async def wait_ready(stack: Stack, http: aiohttp.ClientSession, *, timeout_s: float = 30.0) -> None:
    """Wait until the API answers /readyz with 200 (its gate open: the store verified
    and seen so by the API, not only by the fence)."""

    async def ready() -> bool:
        async with http.get(stack.api.url + "/readyz") as answer:
            return answer.status == 200

    await wait_until(ready, timeout_s=timeout_s)


async def kill_api_during(
    stack: Stack, calls: list[Awaitable[T]], *, after: int = 3
) -> list[T | BaseException]:
    """Run ``calls`` at once and SIGKILL the API process as soon as ``after`` of them
    have answered: the rest meet a process that died mid-request. Each call's result, or
    the exception it ended with (a cut connection is an ``aiohttp.ClientError``)."""
    answered = 0
    enough = asyncio.Event()

    async def counted(call: Awaitable[T]) -> T:
        nonlocal answered
        result = await call
        answered += 1
        if answered >= after:
            enough.set()
        return result

    async def kill() -> None:
        await enough.wait()
        os.killpg(stack.api.process.pid, signal.SIGKILL)

    killer = asyncio.create_task(kill())
    try:
        return list(await asyncio.gather(*(counted(c) for c in calls), return_exceptions=True))
    finally:
        killer.cancel()
