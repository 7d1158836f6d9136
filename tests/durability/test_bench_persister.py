"""`python -m bench persister` end to end: a smoke test of the command, not a timing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from bench.cli import main


def test_bench_persister_reports_rates_and_a_drain_and_loses_nothing(
    redis_server: Any, postgres_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short run on the session's servers: JSON with offered and persisted rates, a
    drain time, 0 lost; its keys and its scratch database are gone afterwards."""
    status = main(
        [
            "persister",
            "--redis-url",
            redis_server.url,
            "--postgres-url",
            postgres_server.url,
            "--rate",
            "200",
            "--seconds",
            "1",
            "--outage",
            "1",
            "--warmup",
            "0",
            "--tags",
            "2",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["lost"] == 0
    assert report["steps_failed"] == 0
    assert report["events_offered"] == report["events_persisted"] > 200
    assert report["offered_per_s"] > 100
    assert report["persisted_per_s"] > 0
    assert report["backlog_at_thaw"] > 0
    assert report["drain_s"] > 0
    with redis.Redis.from_url(redis_server.url) as client:
        assert list(client.scan_iter(match="inv:{bench-*", count=1000)) == []
