"""The worker as a real process under Redis restarts: no loop dies on a Redis error,
the restarted server is verified again, and the API takes reserves again within
seconds with nobody restarting anything; a loop that fails with an unexpected error
makes ``inventory worker`` exit non-zero (so that its supervisor restarts it); and
``inventory dev`` starts again the Redis it runs when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from inventory.devtools.servers import RedisServer, free_port
from inventory.ops.config import Settings
from tests.api.conftest import ApiServer, api_env

from .stack import (
    Stack,
    catalogue,
    patients,
    reserve,
    spawn,
    stop_process,
    wait_ready,
    wait_until,
    wait_verified,
)

pytestmark = pytest.mark.slow

#: How soon after Redis is back the API must take reserves again (fence interval 0.5 s,
#: back-off capped at 5 s; generous for a shared CPU).
RECOVERY_S = 20.0


@pytest.fixture
def stack(stack: Stack) -> Stack:
    """The API and the worker on the private Redis."""
    stack.start_worker()
    return stack


async def _held_in_postgres(database: str, hold_id: str) -> bool:
    connection = await asyncpg.connect(database)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM holds WHERE id = $1", hold_id))
    finally:
        await connection.close()


async def test_api_takes_reserves_again_after_redis_is_killed_and_restarted(
    stack: Stack, private_redis: RedisServer, database: str, http: aiohttp.ClientSession
) -> None:
    """kill -9 of Redis under the running worker, then a start on its append-only file:
    the worker lives on, verifies the new server, the API takes reserves again within
    seconds, and their events still reach Postgres (the persister lives on too)."""
    await wait_verified(private_redis.url)  # the worker's first verification
    await wait_ready(stack, http)  # and the API has seen it (it polls every 0.2 s)
    pairs = await patients(stack, http, 4)
    slot = await catalogue(stack, http, 10)
    assert (await reserve(stack, http, *pairs[0], slot))[0] == 201
    for round_ in (1, 2):
        private_redis.kill()
        await asyncio.sleep(2.0)  # every loop meets the refused connections
        assert stack.worker is not None
        assert stack.worker.poll() is None, _tail(stack)
        private_redis.restart()
        restarted = time.monotonic()
        account, patient = pairs[round_]
        answers: list[Any] = []

        async def reserve_ok(
            account: str = account, patient: str = patient, answers: list[Any] = answers
        ) -> bool:
            status, body = await reserve(stack, http, account, patient, slot)
            answers.append((status, body.get("code")))
            return status == 201

        await wait_until(reserve_ok, timeout_s=RECOVERY_S)
        print(
            f"round {round_}: reserves again {time.monotonic() - restarted:.1f} s after the restart"
        )
        # Only the gate's answer is expected meanwhile, never a 500.
        assert {code for status, code in answers[:-1]} <= {"store_unverified", "store_unavailable"}
        assert stack.worker.poll() is None, _tail(stack)
    _, hold = await reserve(stack, http, *pairs[3], slot)
    hold_id = hold["hold_id"]

    async def persisted() -> bool:
        return await _held_in_postgres(database, hold_id)

    await wait_until(persisted, timeout_s=RECOVERY_S)
    log = stack.worker_log.read_text(errors="replace")
    assert "fence.check_failed" in log
    assert "worker.loop_failed" not in log


def _tail(stack: Stack) -> str:
    return stack.worker_log.read_text(errors="replace")[-3000:]


#: Runs ``inventory worker`` with its sampler replaced by one that fails with a bug
#: after a moment: the process must stop every loop and exit non-zero.
_FAILING_LOOP = """
import asyncio, sys
import inventory.worker as worker

async def broken_sampler(*args, **kwargs):
    await asyncio.sleep(1.0)
    raise ValueError("a bug in a loop")

worker.run_sampler = broken_sampler
from inventory.cli import main
sys.exit(main(["worker"]))
"""


async def test_worker_exits_non_zero_when_a_loop_fails(stack: Stack, tmp_path: Path) -> None:
    """A loop that fails with an unexpected error stops the worker with exit code 1
    (never 0, which a Restart=on-failure supervisor would take as a clean stop)."""
    log_path = tmp_path / "failing-worker.log"
    process = spawn([sys.executable, "-c", _FAILING_LOOP], stack.worker_env, log_path)
    stack.processes.append(process)
    code = await asyncio.to_thread(process.wait, 60)
    text = log_path.read_text(errors="replace")
    assert code == 1, text[-3000:]
    assert "worker.loop_failed" in text
    assert "a bug in a loop" in text


def test_redis_server_restart_keeps_the_append_only_file(private_redis: RedisServer) -> None:
    """The fixture's kill + restart is a crash and a start on the same append-only
    file (what the tests above rely on)."""
    import redis

    client = redis.Redis.from_url(private_redis.url)
    key = f"probe-{os.urandom(4).hex()}"
    client.set(key, "1")
    client.close()
    private_redis.kill()
    private_redis.restart()
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert client.get(key) == b"1"
    finally:
        client.close()


async def test_dev_restarts_its_redis_and_takes_reserves_again(
    database: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Under `inventory dev`, a kill -9 of the Redis it started: dev starts it again on
    its append-only file, its worker verifies it, the API takes reserves again within
    seconds, and the log says what happened."""
    port = free_port()
    env = api_env("", database, port)
    del env["INVENTORY_REDIS_URL"]  # dev starts (and supervises) a Redis of its own
    env.update({"INVENTORY_WORKER_METRICS_PORT": "0", "INVENTORY_FENCE_INTERVAL_S": "0.5"})
    log_path = tmp_path / "dev.log"
    argv = [sys.executable, "-m", "inventory", "dev", "--no-his", "--no-demo"]
    process = spawn([*argv, "--port", str(port)], env, log_path)
    environ = {k: v for k, v in env.items() if k.startswith("INVENTORY_")}
    api = ApiServer(
        url=f"http://127.0.0.1:{port}",
        env=env,
        settings=Settings.from_env({**environ, "INVENTORY_REDIS_URL": "redis://unused"}),
        database_url=database,
        log_path=log_path,
        process=process,
    )
    stack = Stack(api=api, worker_env=env, worker_log=log_path)
    try:

        async def ready() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return "ready: Ctrl-C" in log_path.read_text(errors="replace")

        await wait_until(ready, timeout_s=60)
        banner = log_path.read_text(errors="replace")
        assert "supervised worker, redis" in banner
        redis_url = next(
            line.split()[1] for line in banner.splitlines() if line.startswith("redis ")
        )
        await wait_verified(redis_url)
        await wait_ready(stack, http)
        pairs = await patients(stack, http, 2)
        slot = await catalogue(stack, http, 5)
        assert (await reserve(stack, http, *pairs[0], slot))[0] == 201

        client = Redis.from_url(redis_url)
        redis_pid = int((await client.info("server"))["process_id"])
        await client.aclose()
        os.kill(redis_pid, signal.SIGKILL)
        killed = time.monotonic()

        async def reserve_ok() -> bool:
            status, _ = await reserve(stack, http, *pairs[1], slot)
            return status == 201

        await wait_until(reserve_ok, timeout_s=RECOVERY_S + 10)
        print(f"dev: reserves again {time.monotonic() - killed:.1f} s after the kill")

        async def restart_logged() -> bool:
            # The supervisor logs once its restart call has returned, which can be a
            # moment after the restarted Redis already took the reserve above.
            return "dev.child_restarted" in log_path.read_text(errors="replace")

        await wait_until(restart_logged, timeout_s=10)
        assert process.poll() is None
    finally:
        stop_process(process)
    assert process.returncode == 0
