"""`python -m bench reserve` end to end: a smoke test of the command, not a timing."""

from __future__ import annotations

import json
import subprocess
import sys
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
