"""`inventory dev` with the HIS simulator: it starts, syncs the simulator's demo hospital
into a bookable catalogue, says where the simulator and the metrics are, and stops
cleanly."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import time
from datetime import datetime, timedelta

import aiohttp

from inventory.cli.dev import banner as dev_banner
from inventory.config import Settings
from inventory.servers import free_port
from tests.his.conftest import CHINA


async def test_dev_starts_the_simulator_and_syncs_it_quickly() -> None:
    """`inventory dev` is ready in under 20 s with the simulator's hospital synced, and
    prints where the API's and the worker's metrics are; both answer there."""
    port, worker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env["INVENTORY_WORKER_METRICS_PORT"] = str(worker_port)
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
        api, worker = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{worker_port}"
        at = banner.index(f"metrics    api {api}/metrics")
        assert banner[at + 1] == (
            f"           worker {worker}/metrics  (health {worker}/healthz  {worker}/readyz)"
        ), banner
        day = (datetime.now(tz=CHINA) + timedelta(days=1)).date().isoformat()
        url = f"{api}/v1/departments/cardiology/schedules?date={day}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as answer:
                schedules = (await answer.json())["items"]
            for metrics, family in (
                (f"{api}/metrics", "inventory_http_request_duration_seconds"),
                (f"{worker}/metrics", "inventory_holds_active"),
            ):
                async with http.get(metrics) as answer:
                    assert answer.status == 200, metrics
                    assert family in await answer.text(), metrics
        assert schedules
        assert all(s["location"].startswith("门诊楼") for s in schedules)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            drain = asyncio.create_task(process.stdout.read())
            await asyncio.wait_for(process.wait(), timeout=30)
            await drain
    assert process.returncode == 0


def _settings(worker_port: int) -> Settings:
    key = base64.b64encode(os.urandom(32)).decode()
    return Settings.from_env(
        {
            "INVENTORY_JWT_KEYS": f"k1:{key}",
            "INVENTORY_FIELD_KEYS": f"f1:{base64.b64encode(os.urandom(32)).decode()}",
            "INVENTORY_FIELD_CURRENT_KEY": "f1",
            "INVENTORY_BLIND_INDEX_KEY": f"i1:{base64.b64encode(os.urandom(32)).decode()}",
            "INVENTORY_WORKER_METRICS_PORT": str(worker_port),
        }
    )


def test_dev_banner_says_when_the_worker_metrics_are_off_or_not_answering() -> None:
    """The worker's metrics line says "off" with port 0, and that the port does not
    answer when the worker could not take it; the API's /metrics is always named."""

    def lines(worker_port: int, answers: bool) -> list[str]:
        return dev_banner(
            _settings(worker_port),
            base="http://127.0.0.1:8080",
            redis_url="redis://r",
            database_url="postgresql://p",
            applied=3,
            his_url="",
            demo=None,
            worker_answers=answers,
        )

    off = lines(0, False)
    assert "metrics    api http://127.0.0.1:8080/metrics" in off
    assert "           worker off (INVENTORY_WORKER_METRICS_PORT=0)" in off
    taken = lines(9101, False)
    assert (
        "           worker http://127.0.0.1:9101/metrics  (not answering: is the port taken?"
        " see the log)" in taken
    )
    assert off[-1].startswith("ready:")
