"""`inventory dev` with the HIS simulator: it starts, syncs the simulator's demo hospital
into a bookable catalogue, says where the simulator is, and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import datetime, timedelta

import aiohttp

from inventory.servers import free_port
from tests.his.conftest import CHINA


async def test_dev_starts_the_simulator_and_syncs_it_quickly() -> None:
    """`inventory dev` is ready in under 20 s with the simulator's hospital synced."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env["INVENTORY_WORKER_METRICS_PORT"] = "0"
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inventory",
        "dev",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    banner: list[str] = []
    try:
        while time.monotonic() - started < 60:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
            if not line:
                break
            if not line.startswith("{"):
                banner.append(line.rstrip())
            if line.startswith("ready:"):
                break
        ready_s = time.monotonic() - started
        assert banner[-1].startswith("ready:"), banner
        his = next(b for b in banner if b.startswith("his "))
        assert "/fhir" in his
        assert "$admin" in his
        assert any(b.startswith("demo       hospital demo-hospital") for b in banner), banner
        assert ready_s < 20, ready_s
        day = (datetime.now(tz=CHINA) + timedelta(days=1)).date().isoformat()
        url = f"http://127.0.0.1:{port}/v1/departments/cardiology/schedules?date={day}"
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            schedules = (await answer.json())["items"]
        assert schedules
        assert all(s["location"].startswith("门诊楼") for s in schedules)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            drain = asyncio.create_task(process.stdout.read())
            await asyncio.wait_for(process.wait(), timeout=30)
            await drain
    assert process.returncode == 0
