"""`python -m bench reserve` end to end: a smoke test of the command, not a timing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.cli import main
from inventory.cli import main as inventory_main


def test_bench_reserve_prints_a_positive_ratio_and_leaves_no_keys(
    redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """One short round against the session Redis: JSON with ratio > 0, no keys left."""
    status = main(
        [
            "reserve",
            "--redis-url",
            redis_server.url,
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--concurrency",
            "8",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert isinstance(report["ratio"], float)
    assert report["ratio"] > 0
    assert report["failures"] == 0
    assert report["rounds"][0]["store"]["holds"] > 0
    with redis.Redis.from_url(redis_server.url) as client:
        assert list(client.scan_iter(match="inv:{bench-*", count=1000)) == []
        assert not [t for t in client.smembers("inv:tags") if t.startswith(b"bench-")]


def test_bench_runs_as_documented_from_the_checkout() -> None:
    """`python -m bench` from the checkout's root lists every benchmark; the service's
    own command line has none (the benchmarks do not ship with it)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for benchmark in ("reserve", "http", "persister", "replot"):
        assert benchmark in done.stdout
    with pytest.raises(SystemExit) as exited:
        inventory_main(["bench", "reserve"])
    assert exited.value.code == 2


def _children(pid: int) -> set[int]:
    """The process ids whose parent is ``pid`` (Linux's /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigterm_stops_a_benchmark_and_the_servers_it_started(tmp_path: Path) -> None:
    """`kill` (SIGTERM) of a running benchmark stops what it started, as Ctrl-C does:
    without a handler Python would die at once and leave its private redis-server
    running."""
    root = Path(__file__).resolve().parents[1]
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        bench = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "reserve",
                "--seconds",
                "120",
                "--rounds",
                "1",
                "--warmup",
                "120",
                "--concurrency",
                "2",
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while b"warming up" not in stderr_path.read_bytes():
            assert bench.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.1)
        servers = _children(bench.pid)
        assert servers, "the benchmark started no private server"
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) == 130, stderr_path.read_text()
        for pid in servers:
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(pid), f"process {pid} outlived the benchmark"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
