"""The message simulators as real server processes (``python -m
inventory.simulators.messages serve wechat|sms``), and a stack whose worker notifies
through them: an API process and an ``inventory worker`` process on a Redis and a
database of the test's own."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from inventory.devtools.servers import free_port
from inventory.record.pool import create_pool
from inventory.simulators.messages import DEFAULT_APPID, DEFAULT_SECRET, DEFAULT_SMS_KEY
from tests.durability.stack import Stack, open_stack

#: Every kind has a template id in the tests (a hospital may override it).
TEMPLATES = ",".join(
    f"{kind}:tmpl-{kind.replace('_', '-')}"
    for kind in (
        "booking_confirmed",
        "his_rejected",
        "schedule_suspended",
        "hospital_cancelled",
        "refund_succeeded",
        "visit_reminder",
        "no_show_recorded",
        "patient_banned",
        "ban_ended",
        "waitlist_offer",
        "substitution_offer",
        "reschedule_done",
    )
)


@dataclass
class MessageSimServer:
    """One running simulator and what a test asks of it."""

    channel: str
    url: str
    process: subprocess.Popen[bytes]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as answer:
            return orjson.loads(answer.read())

    def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", "/sim/messages")["messages"]
        return found

    def fault(self, mode: str, **extra: Any) -> None:
        self.call("PUT", "/sim/faults", {"mode": mode, **extra})

    def reset(self) -> None:
        self.call("POST", "/sim/reset", {})


def start_message_sim(channel: str, log_path: Path) -> MessageSimServer:
    """Start one simulator on a free port and wait until it answers."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inventory.simulators.messages",
                "serve",
                channel,
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{channel} simulator exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return MessageSimServer(channel, url, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{channel} simulator did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def wechat_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MessageSimServer]:
    """The WeChat subscribe-message simulator process."""
    server = start_message_sim("wechat", tmp_path_factory.mktemp("wechat-sim") / "wechat-sim.log")
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="module")
def sms_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MessageSimServer]:
    """The SMS provider simulator process."""
    server = start_message_sim("sms", tmp_path_factory.mktemp("sms-sim") / "sms-sim.log")
    try:
        yield server
    finally:
        _stop(server.process)


def notify_env(wechat: MessageSimServer, sms: MessageSimServer, **overrides: str) -> dict[str, str]:
    """The worker's notification settings, pointed at the simulators, at a test's pace."""
    env = {
        "INVENTORY_NOTIFY_WECHAT_URL": wechat.url,
        "INVENTORY_NOTIFY_WECHAT_APPID": DEFAULT_APPID,
        "INVENTORY_NOTIFY_WECHAT_SECRET": DEFAULT_SECRET,
        "INVENTORY_NOTIFY_WECHAT_TEMPLATES": TEMPLATES,
        "INVENTORY_NOTIFY_SMS_URL": sms.url,
        "INVENTORY_NOTIFY_SMS_API_KEY": DEFAULT_SMS_KEY,
        "INVENTORY_NOTIFY_INTERVAL_S": "0.1",
        "INVENTORY_NOTIFY_SCAN_INTERVAL_S": "0.5",
        "INVENTORY_NOTIFY_CALL_TIMEOUT_S": "2",
        "INVENTORY_NOTIFY_LEASE_S": "4",
        "INVENTORY_NOTIFY_RETRY_INITIAL_S": "0.2",
        "INVENTORY_NOTIFY_RETRY_MAX_S": "0.5",
        "INVENTORY_NOTIFY_MAX_ATTEMPTS": "3",
    }
    env.update(
        {
            k if k.startswith("INVENTORY_") else f"INVENTORY_NOTIFY_{k.upper()}": v
            for k, v in overrides.items()
        }
    )
    return env


@pytest.fixture
def make_stack(
    private_redis: Any,
    database: str,
    tmp_path: Path,
    wechat_sim: MessageSimServer,
    sms_sim: MessageSimServer,
) -> Iterator[Callable[..., Stack]]:
    """Start an API and a notifying worker (notify settings overridden by keyword) on a
    Redis and a database of this test's own; the simulators start each test empty."""
    wechat_sim.reset()
    sms_sim.reset()
    stacks: list[Stack] = []

    def make(**overrides: str) -> Stack:
        env = notify_env(wechat_sim, sms_sim, **overrides)
        running = open_stack(private_redis.url, database, tmp_path, extra_env=env)
        stacks.append(running)
        running.start_worker()
        return running

    try:
        yield make
    finally:
        for running in stacks:
            running.close()


@pytest.fixture
def notify_stack(make_stack: Callable[..., Stack]) -> Stack:
    """An API and a notifying worker at the tests' pace."""
    return make_stack()


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database, for looking at rows."""
    pool = await create_pool(database, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client."""
    async with aiohttp.ClientSession() as session:
        yield session
