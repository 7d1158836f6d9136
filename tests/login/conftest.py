"""Login against real processes: the WeChat platform simulator (``python -m
inventory.simulators.wxsim serve``), the SMS simulator the notifications use too
(``python -m inventory.simulators.messages serve sms``) and an API process configured for
both, on the session's Redis and a migrated database of its own.

The API reads the client address from ``X-Forwarded-For``, so each test counts its
requests against an address of its own (:func:`address`) and the per-address limits of
one test never refuse another's.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from inventory.devtools.servers import free_port
from tests.api.conftest import ApiServer, api_env, running_api, verified_database
from tests.databases import Databases

APPID = "wx5f1a2b3c4d5e6f70"
SECRET = secrets.token_hex(16)
SMS_KEY = secrets.token_hex(16)
CODE_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
#: Wrong codes that lock a phone, in the test API.
MAX_FAILURES = 3
#: Codes per phone, and per client address, in an hour.
PER_PHONE = 4
PER_ADDRESS = 6
_addresses = itertools.count(1)
#: A login code in an SMS text.
CODE_IN_TEXT = re.compile(r"验证码为 ([0-9]{6})")


def address() -> dict[str, str]:
    """Headers naming a client address no other test uses."""
    n = next(_addresses)
    return {"X-Forwarded-For": f"198.51.{n // 250}.{n % 250 + 1}"}


@dataclass
class SimServer:
    """A running simulator process."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sim(module: str, args: list[str], log_path: Path) -> SimServer:
    """Start ``python -m inventory.simulators.<module> serve ...`` and wait until it
    answers."""
    port = free_port()
    log = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            f"inventory.simulators.{module}",
            "serve",
            "--port",
            str(port),
            *args,
        ],
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{module} exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return SimServer(url, process, log_path)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{module} did not start")


def login_env(
    redis_url: str, database_url: str, port: int, *, wechat_url: str, sms_url: str
) -> dict[str, str]:
    """An API process's environment with both logins on."""
    env = api_env(redis_url, database_url, port)
    env.update(
        {
            "INVENTORY_WECHAT_APPID": APPID,
            "INVENTORY_WECHAT_APP_SECRET": SECRET,
            "INVENTORY_WECHAT_LOGIN_URL": wechat_url,
            "INVENTORY_SMS_URL": sms_url,
            "INVENTORY_SMS_API_KEY": SMS_KEY,
            "INVENTORY_SMS_CODE_KEY": f"c1:{CODE_KEY}",
            "INVENTORY_SMS_CODE_MAX_FAILURES": str(MAX_FAILURES),
            # No minimum interval between two codes to one phone (tests send several),
            # and small limits the tests reach.
            "INVENTORY_SMS_RESEND_S": "0",
            "INVENTORY_SMS_RATE_PER_PHONE": f"{PER_PHONE}/3600",
            "INVENTORY_SMS_RATE_PER_IP": f"{PER_ADDRESS}/3600",
            "INVENTORY_CLIENT_IP_HEADER": "X-Forwarded-For",
        }
    )
    return env


@pytest.fixture(scope="module")
def wx_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """The WeChat platform simulator."""
    server = start_sim(
        "wxsim",
        ["--appid", APPID, "--secret", SECRET],
        tmp_path_factory.mktemp("wxsim") / "wxsim.log",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sms_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """The SMS gateway simulator."""
    server = start_sim(
        "messages", ["sms", "--api-key", SMS_KEY], tmp_path_factory.mktemp("smssim") / "sms.log"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def login_api(
    redis_server: Any,
    databases: Databases,
    wx_sim: SimServer,
    sms_sim: SimServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """An API process with WeChat and SMS login on, through the simulators."""
    database_url = verified_database(redis_server.url, databases)
    port = free_port()
    env = login_env(
        redis_server.url, database_url, port, wechat_url=wx_sim.url, sms_url=sms_sim.url
    )
    with running_api(env, tmp_path_factory.mktemp("login-api") / "api.log") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def redis_client(redis_server: Any) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis (to age a code, as a clock would)."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def login_db(login_api: ApiServer) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the login API's database, for looking at rows."""
    pool = await asyncpg.create_pool(login_api.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """(status, decoded body or None, headers) of one request."""
    async with http.request(method, url, json=json, headers=headers) as answer:
        raw = await answer.read()
        return answer.status, orjson.loads(raw) if raw else None, answer.headers


async def sim_login(http: aiohttp.ClientSession, wx: SimServer, **user: str) -> dict[str, Any]:
    """A device's wx.login at the simulator: {code, openid}."""
    status, body, _ = await call(http, "POST", wx.url + "/sim/login", json=user)
    assert status == 200, body
    return dict(body)


async def sent_codes(http: aiohttp.ClientSession, sms: SimServer, phone: str) -> list[str]:
    """The login codes the SMS simulator delivered to ``phone``, oldest first (read from
    the texts, as the patient reads them)."""
    status, body, _ = await call(http, "GET", f"{sms.url}/sim/messages")
    assert status == 200, body
    found = []
    for message in sorted(body["messages"], key=lambda m: m["at"]):
        code = CODE_IN_TEXT.search(message["content"]["text"])
        if message["address"] == phone and code is not None:
            found.append(code.group(1))
    return found


def new_phone() -> str:
    """A mainland mobile number no other test uses."""
    return "139" + f"{secrets.randbelow(10**8):08d}"
