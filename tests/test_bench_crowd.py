"""`python -m bench.crowd`: a smoke test of the crowd harness, not a measurement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.crowd import main


def test_a_small_crowd_gets_every_answer_and_no_unit_twice(
    postgres_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """60 patients on 10 units through a real worker and API (its own Redis, a fresh
    database on the session's Postgres), the API allowed 8 requests in flight so the
    crowd is shed and comes back as told: every patient gets a final answer, exactly
    the 10 units are sold (the client's holds, Redis's counts, Postgres's holds) and
    ``inventory check`` passes."""
    status = main(
        [
            "--patients",
            "60",
            "--units",
            "10",
            "--connections",
            "24",
            "--deadline",
            "15",
            "--postgres-url",
            postgres_server.url,
            "--set",
            "INVENTORY_MAX_IN_FLIGHT=8",
            # Shed patients come back within a second: the run stays short.
            "--set",
            "INVENTORY_RETRY_AFTER_MAX_S=1",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["final_answers"] == 60
    assert report["all_final_s"] is not None
    assert report["still_retrying_at_deadline"] == {}
    sold = report["sold"]
    assert sold["at_most_once"] is True
    assert sold["holds_answered"] == sold["redis_held_or_booked"] == 10
    assert sold["postgres_open_holds"] == 10
    assert report["answers"]["201"] == 10
    assert report["answers"]["409 sold_out"] == 50
    # The crowd was shed and came back: the retry path ran.
    assert report["answers_503"] > 0
    assert report["requests_per_patient"]["max"] >= 2
    assert report["check"]["passed"] is True
    assert report["time_to_final_s"]["p99"] <= report["all_final_s"]
    # The store made the last hold before its answer reached the patient.
    assert 0 <= report["store_sold_out_s"] <= report["sold_out_s"]


def test_the_harness_refuses_a_setting_that_is_not_the_service_s(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--set`` takes INVENTORY_ settings only (nothing else of the environment)."""
    with pytest.raises(SystemExit) as exited:
        main(["--set", "PATH=/tmp"])
    assert exited.value.code == 2
    assert "INVENTORY_NAME=VALUE" in capsys.readouterr().err
