"""`python -m bench http --sweep --plot`: a smoke test of the sweep and its plot, not a timing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from bench.cli import main
from bench.http import sweep
from bench.http.config import HttpBenchConfig

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_offered_rates_merge_close_rates_and_ascend() -> None:
    """Rates from both maxima come out ascending; one within 10 % of a lower one is dropped."""
    rates = sweep.offered_rates(20_000, 4_000, (0.1, 0.5, 1.0), (0.5, 1.0, 1.25))
    assert rates == [2_000, 4_000, 5_000, 10_000, 20_000]
    assert sweep.offered_rates(1_000, 0.5, (), (1.0,)) == []


def test_sweep_config_refuses_no_or_absurd_fractions() -> None:
    """A sweep needs some fraction, each in (0, 5]."""
    config = HttpBenchConfig()
    with pytest.raises(ValueError, match="at least one"):
        sweep.SweepConfig(config, (), ())
    with pytest.raises(ValueError, match="fractions"):
        sweep.SweepConfig(config, (0.0,), ())


def test_bench_http_sweep_writes_a_png_and_its_figures(
    redis_server: Any,
    postgres_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two points of 1 s on the session's servers: a PNG and a JSON with both sides at
    every point, which alone draws the PNG again; the run's keys are gone afterwards."""
    png = tmp_path / "plots" / "sweep.png"
    status = main(
        [
            "http",
            "--redis-url",
            redis_server.url,
            "--database-url",
            postgres_server.url,
            "--plot",
            str(png),
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--connections",
            "8",
            "--fractions",
            "",
            "--api-fractions",
            "0.3,0.6",
            "--patients",
            "400",
            "--departments",
            "5",
            "--days",
            "6",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report["flags"]
    assert report["errors"] == 0
    assert report["max"]["api"]["rps"] > 0
    assert report["max"]["bare"]["rps"] > 0
    assert png.read_bytes().startswith(_PNG_SIGNATURE)
    assert png.stat().st_size > 10_000
    figures = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    assert figures["machine"]["cpu_count"] > 0
    assert figures["machine"]["redis"]
    assert len(figures["points"]) == 2
    for point in figures["points"]:
        assert point["offered_rps"] > 0
        for side in ("api", "bare"):
            assert point[side]["target_rps"] == point["offered_rps"]
            assert point[side]["ok"] > 0
            assert point[side]["error_rate"] == 0
            assert 0 < point[side]["p50_ms"] <= point[side]["p99_ms"]
    again = tmp_path / "again.png"
    assert main(["replot", str(png.with_suffix(".json")), str(again)]) == 0
    assert again.read_bytes().startswith(_PNG_SIGNATURE)
    with redis.Redis.from_url(redis_server.url) as client:
        assert list(client.scan_iter(match="inv:{bench-*", count=1000)) == []
        assert not [t for t in client.smembers("inv:tags") if t.startswith(b"bench-")]
