"""`python -m bench http --floor`: a smoke test of the rounds and the floor, not a timing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from bench.cli import main


def test_bench_http_rounds_with_the_floor(
    redis_server: Any,
    postgres_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One round of 1 s phases on the session's servers: the API, the bare handler and
    the floor (closed loop, and at the API's paced rate) all answer with holds (a 201
    from the floor comes only after the store's reserve returned one), and the run's
    keys are gone afterwards."""
    status = main(
        [
            "http",
            "--redis-url",
            redis_server.url,
            "--database-url",
            postgres_server.url,
            "--floor",
            "--rounds",
            "1",
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--connections",
            "8",
            # Enough distinct (patient, department-day) pairs for every booking phase.
            "--patients",
            "1500",
            "--departments",
            "4",
            "--days",
            "6",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0, (report["flags"], report["rounds"])
    assert report["errors"] == 0
    assert report["config"]["floor"] is True
    assert report["setting"]["processes"]["floor"] == 1
    (one_round,) = report["rounds"]
    floor_max = one_round["floor_max"]
    assert floor_max["ok"] > 0
    assert floor_max["errors"] == 0
    assert floor_max["redis_cpu_us_per_req"] > 0
    assert report["floor"]["throughput_ratio"]["median"] > 0
    api_rps = one_round["max"]["api"]["rps"]
    assert report["floor"]["api_to_floor_ratio"]["median"] == pytest.approx(
        api_rps / floor_max["rps"], rel=1e-3
    )
    # The floor also ran at the paced_api rate, the one the p99 target against it is at.
    floor_paced = one_round["floor_paced_api"]
    assert floor_paced["ok"] > 0
    assert floor_paced["target_rps"] == pytest.approx(one_round["paced_api"]["api"]["target_rps"])
    assert report["floor"]["paced_api_p99_ratio"]["median"] == pytest.approx(
        one_round["paced_api"]["api"]["p99_ms"] / floor_paced["p99_ms"], rel=1e-2
    )
    assert set(report["floor"]["targets"]) >= {"api_to_floor_met", "server_cpu_met", "p99_met"}
    # Every booking side took fresh request indices: the API's and the floor's holds
    # never collide on one patient and department-day (which would be 409s, errors).
    assert (
        report["setting"]["requests_used"]
        >= floor_max["ok"] + floor_paced["ok"] + one_round["max"]["api"]["ok"]
    )
    with redis.Redis.from_url(redis_server.url) as client:
        assert list(client.scan_iter(match="inv:{bench-*", count=1000)) == []
        assert not [t for t in client.smembers("inv:tags") if t.startswith(b"bench-")]


def test_bench_http_refuses_the_floor_with_the_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    """The floor is a phase of the rounds; the sweep has none."""
    with pytest.raises(SystemExit) as exited:
        main(["http", "--sweep", "--floor"])
    assert exited.value.code == 2
    assert "--floor applies to the rounds only" in capsys.readouterr().err
