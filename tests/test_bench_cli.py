"""`inventory bench reserve` end to end: a smoke test of the command, not a timing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from inventory.cli import main


def test_bench_reserve_prints_a_positive_ratio_and_leaves_no_keys(
    redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """One short round against the session Redis: JSON with ratio > 0, no keys left."""
    status = main(
        [
            "bench",
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
