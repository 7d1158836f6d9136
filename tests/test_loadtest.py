"""`inventory loadtest` end to end: a private stack (Redis, a fresh database, the API and
the worker), the release-day Locust scenario for ~10 s, then the invariants: PASS."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inventory.devtools.servers import free_port, start_redis

from .api.conftest import api_env, start_api, stop_api
from .databases import Databases
from .durability.stack import start_worker
from .test_metrics import _wait_http

needs_locust = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="Locust is not installed (pip install 'slot-inventory[loadtest]')",
)


@dataclass
class LoadStack:
    """The API's URL and the environment its processes (and the load test) share."""

    url: str
    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def load_stack(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoadStack]:
    """A private Redis, database, worker and API for this module."""
    root = tmp_path_factory.mktemp("loadtest")
    redis = start_redis(root / "redis")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        database_url = asyncio.run(databases.create())
        port = free_port()
        env = api_env(redis.url, database_url, port)
        worker_port = free_port()
        worker_env = env | {
            "INVENTORY_WORKER_METRICS_PORT": str(worker_port),
            "INVENTORY_EXPIRE_INTERVAL_S": "0.2",
        }
        worker_log = root / "worker.log"
        worker = start_worker(worker_env, worker_log)
        processes.append(worker)
        _wait_http(f"http://127.0.0.1:{worker_port}/readyz", worker, worker_log)
        processes.append(start_api(env, root / "api.log"))
        yield LoadStack(f"http://127.0.0.1:{port}", env, root)
    finally:
        for process in reversed(processes):
            stop_api(process)
        redis.close()


@needs_locust
@pytest.mark.parametrize(
    ("workers", "queued"),
    [(0, False), (2, False), (0, True)],
    ids=["local", "distributed", "queued"],
)
def test_release_day_passes_the_invariants(
    load_stack: LoadStack, workers: int, queued: bool
) -> None:
    """Twenty users for ten seconds on a schedule that sells out (one process, or a master
    with two workers; or through a waiting room, the QueuedPatient class joining, waiting
    on its ticket and reserving with its token): the checker says PASS."""
    out = load_stack.root / f"run-{workers}-{queued}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inventory",
            "loadtest",
            "--host",
            load_stack.url,
            "--users",
            "20",
            "--spawn-rate",
            "20",
            "--run-time",
            "10",
            "--wait-s",
            "2",
            "--slots",
            "4",
            "--capacity",
            "5",
            "--wait-holds",
            "0",
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--master-port",
            str(free_port()),
            *(["--queued"] if queued else []),
        ],
        env=load_stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = result.stdout
    assert result.returncode == 0, (summary + result.stderr)[-4000:]
    assert summary.rstrip().endswith("PASS"), summary[-4000:]
    assert "[ok] every paid booking present" in summary
    paid = (out / "paid.jsonl").read_text().splitlines()
    assert paid, "nobody managed to pay: the scenario did not exercise confirm"
    if queued:
        assert "queued release" in summary
        stats = (out / "locust_stats.csv").read_text()
        assert "/v1/releases/{release_id}/tickets/{ticket_id}" in stats
        assert "/v1/releases/{release_id}/tickets," in stats
    print(summary)
