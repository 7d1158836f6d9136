"""`python -m bench room`: a smoke test of the release-day harness, not a measurement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main


@pytest.mark.timeout(300)
def test_a_small_release_through_the_room(
    postgres_server: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """40 patients on 10 units from two client processes: every patient has a final
    answer, exactly the 10 units are held (clients and Redis), nothing is oversold, no
    5xx, at most one request per patient after joining besides one stream, and the draw
    verifies from its revealed seed; the previous design's crowd ran in the same run.
    The API's and the worker's logs are kept where asked."""
    status = main(
        [
            "room",
            "--patients",
            "40",
            "--units",
            "10",
            "--processes",
            "2",
            "--lead",
            "25",
            "--deadline",
            "40",
            "--compare-deadline",
            "30",
            "--postgres-url",
            postgres_server.url,
            "--keep-logs",
            str(tmp_path / "logs"),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert out, err[-3000:]
    report = json.loads(out)
    assert status == 0, (report, err[-3000:])
    assert report["final_answers"] == 40
    assert report["t0_to_all_final_s"] is not None
    assert report["outcomes"] == {"held": 10, "sold_out": 30}
    assert report["held"] == {"clients": 10, "redis": 10, "capacity": 10}
    assert report["oversold"] == 0
    assert report["answers_5xx_other"] == 0
    assert report["fairness"]["verified"] is True
    assert report["requests_per_patient_after_join"]["max"] <= 1
    assert report["streams_per_patient"]["max"] == 1
    assert report["answers_503"] == 0
    assert report["t0_to_sold_out_s"] is not None
    assert report["status_path_s"]["p50"] is not None
    assert report["bare_handler_s"]["p50"] is not None
    assert report["sold_out_reached_streams_s"]["max"] is not None
    previous = report["previous_design"]
    assert previous["final_answers"] == 40
    assert previous["oversold"] == 0
    kept = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert kept == ["api.log", "worker.log"]
    assert "worker.started" in (tmp_path / "logs" / "worker.log").read_text()
