"""Payments against real processes: the pay simulator (``python -m inventory.simulators.paysim
serve``) and an API server configured for WeChat Pay with test keys generated here, on the
session's Redis and a migrated database of its own.

The keys are made fresh per session (RSA 2048 platform and merchant pairs, an APIv3 key);
no key material is checked in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inventory.devtools.servers import free_port
from inventory.simulators.paysim import KeySet
from tests.api.conftest import ApiServer, api_env, running_api, verified_database
from tests.databases import Databases

#: The loops run often in tests, and close an unpaid order soon after its hold's deadline.
LOOP_ENV = {
    "INVENTORY_PAYMENT_LOOP_INTERVAL_S": "0.2",
    "INVENTORY_PAYMENT_CLOSE_GRACE_S": "0.5",
}


@dataclass
class PaySimServer:
    """The running simulator."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def start_paysim(keys: KeySet, log_path: Path) -> PaySimServer:
    """Start the simulator on a free port and wait until it answers."""
    port = free_port()
    env = dict(os.environ) | keys.sim_env(port=port)
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "inventory.simulators.paysim", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"paysim exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return PaySimServer(url, process, log_path)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("paysim did not start")


def payment_api_env(
    keys: KeySet, sim: PaySimServer, redis_url: str, database_url: str, port: int
) -> dict[str, str]:
    """An API process's environment with WeChat Pay pointed at the simulator."""
    env = api_env(redis_url, database_url, port)
    env.update(
        keys.service_env(
            api_url=sim.url, notify_url=f"http://127.0.0.1:{port}/v1/payments/wechat/notify"
        )
    )
    env.update(LOOP_ENV)
    return env


@pytest.fixture(scope="session")
def pay_keys() -> KeySet:
    """The test merchant's keys, fresh for the session."""
    return KeySet.generate()


@pytest.fixture(scope="session")
def pay_sim(pay_keys: KeySet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaySimServer]:
    """The pay simulator process."""
    server = start_paysim(pay_keys, tmp_path_factory.mktemp("paysim") / "paysim.log")
    try:
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def pay_api(
    redis_server: Any,
    databases: Databases,
    pay_keys: KeySet,
    pay_sim: PaySimServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiServer]:
    """An API process taking WeChat Pay payments through the simulator."""
    database_url = verified_database(redis_server.url, databases)
    port = free_port()
    env = payment_api_env(pay_keys, pay_sim, redis_server.url, database_url, port)
    with running_api(env, tmp_path_factory.mktemp("pay-api") / "api.log") as server:
        yield server


@pytest.fixture(scope="session")
async def pay_db(pay_api: ApiServer) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the payment API's database, for looking at rows."""
    pool = await asyncpg.create_pool(pay_api.database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
