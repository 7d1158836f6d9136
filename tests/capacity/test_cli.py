"""`inventory capacity`: table and JSON output, inverse questions, refusals and exit codes."""

from __future__ import annotations

import json

import pytest

from inventory.capacity import max_arrival_rate_for_wait, mms_metrics
from inventory.cli import main

BASE = ["capacity", "--arrival-rate", "10", "--service-rate", "1", "--servers", "12"]


def test_json_has_exactly_the_six_model_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints utilization, p_wait, wq_hours, w_hours, lq and l, nothing else."""
    assert main([*BASE, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert list(payload) == ["utilization", "p_wait", "wq_hours", "w_hours", "lq", "l"]
    exact = mms_metrics(10.0, 1.0, 12)
    assert payload["p_wait"] == exact.p_wait
    assert payload["wq_hours"] == exact.wq_hours
    assert payload["l"] == exact.l


def test_table_names_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """The readable table shows utilisation, Erlang C, Wq, W, Lq and L."""
    assert main(BASE) == 0
    out = capsys.readouterr().out
    for label in ("utilisation", "Erlang C", "Wq", "W", "Lq", "L", "83.33%", "13.48 min"):
        assert label in out


def test_unstable_system_exits_one_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    """Utilisation >= 1 prints why on stderr and exits 1."""
    argv = ["capacity", "--arrival-rate", "12", "--service-rate", "1", "--servers", "12"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unstable" in captured.err
    assert "utilisation" in captured.err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--arrival-rate", "-3"),
        ("--arrival-rate", "0"),
        ("--arrival-rate", "nan"),
        ("--service-rate", "inf"),
        ("--service-rate", "0"),
        ("--servers", "0"),
        ("--servers", "-2"),
    ],
)
def test_nonsense_numbers_exit_one_with_a_message(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Negative, zero, NaN or infinite rates and non-positive doctors are refused by the model."""
    argv = {"--arrival-rate": "2", "--service-rate": "1", "--servers": "3", option: value}
    assert main(["capacity", *[x for pair in argv.items() for x in pair]]) == 1
    assert "must be" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["capacity", "--arrival-rate", "2", "--service-rate", "1", "--servers", "2.5"],
        ["capacity", "--arrival-rate", "2", "--service-rate", "1", "--servers", "three"],
        ["capacity", "--arrival-rate", "two", "--service-rate", "1", "--servers", "3"],
        ["capacity", "--arrival-rate", "2", "--service-rate", "1"],
        ["capacity"],
    ],
)
def test_malformed_or_missing_options_exit_two(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Non-integer doctors, non-numbers and missing options are argparse errors (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_min_servers_question(capsys: pytest.CaptureFixture[str]) -> None:
    """min-servers answers 14 doctors for λ=10, μ=1 and a 5-minute mean wait."""
    argv = ["capacity", "min-servers", "--arrival-rate", "10", "--service-rate", "1"]
    assert main([*argv, "--max-wait-minutes", "5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["servers"] == 14
    assert payload["wq_hours"] <= 5 / 60
    assert main([*argv, "--max-wait-minutes", "5"]) == 0
    assert "fewest doctors" in capsys.readouterr().out


def test_min_servers_refuses_a_zero_target(capsys: pytest.CaptureFixture[str]) -> None:
    """A 0-minute target can never be met and is refused with exit 1."""
    argv = ["capacity", "min-servers", "--arrival-rate", "10", "--service-rate", "1"]
    assert main([*argv, "--max-wait-minutes", "0"]) == 1
    assert "max wait" in capsys.readouterr().err


def test_max_rate_question_with_slots(capsys: pytest.CaptureFixture[str]) -> None:
    """max-rate gives the most patients per hour and the slots to release per session."""
    argv = ["capacity", "max-rate", "--service-rate", "3", "--servers", "4"]
    argv += ["--max-wait-minutes", "10", "--session-hours", "4", "--no-show-rate", "0.1"]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    rate = max_arrival_rate_for_wait(3.0, 4, 10 / 60)
    assert payload == {"max_arrival_rate": rate, "slots_per_session": int(rate * 4 / 0.9)}
    assert main(argv) == 0
    assert "slots per 4 h session" in capsys.readouterr().out


def test_simulate_poisson_prints_estimates_next_to_formulas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """simulate --arrival-rate reports intervals for the six figures and the exact values."""
    argv = ["capacity", "simulate", "--arrival-rate", "4", "--service-rate", "1"]
    argv += ["--servers", "5", "--seed", "2", "--patients", "20000", "--warmup-patients", "2000"]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["method"] == "batch_means"
    assert payload["seed"] == 2
    assert set(payload["simulated"]) == {"utilization", "p_wait", "wq_hours", "w_hours", "lq", "l"}
    assert set(payload["simulated"]["lq"]) == {"mean", "low", "high", "half_width"}
    assert payload["formula"]["lq"] == mms_metrics(4.0, 1.0, 5).lq
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "seed 2" in out
    assert "M/M/s formula" in out


def test_simulate_session_reports_overtime(capsys: pytest.CaptureFixture[str]) -> None:
    """simulate --slots models a booked session with no-shows and lateness, with overtime."""
    argv = ["capacity", "simulate", "--slots", "20", "--session-hours", "4"]
    argv += ["--service-rate", "5", "--servers", "1", "--no-show", "0.1"]
    argv += ["--late-fraction", "0.2", "--late-mean-minutes", "10", "--replications", "200"]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["method"] == "replications"
    assert payload["samples"] == 200
    assert "overtime_hours" in payload["simulated"]
    assert payload["formula"]["utilization"] == pytest.approx(0.9 * 20 / 4 / 5)
    assert main(argv) == 0
    assert "overtime" in capsys.readouterr().out


def test_simulate_session_over_capacity_has_no_formula(capsys: pytest.CaptureFixture[str]) -> None:
    """A session booked beyond capacity still simulates; the M/M/s column says unstable."""
    argv = ["capacity", "simulate", "--slots", "30", "--session-hours", "4"]
    argv += ["--service-rate", "5", "--servers", "1", "--replications", "100"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["formula"] is None
    assert main(argv) == 0
    assert "unstable" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        ["--arrival-rate", "3", "--no-show", "0.2"],
        ["--slots", "10"],
        ["--slots", "10", "--session-hours", "4", "--batches", "5"],
        ["--arrival-rate", "3", "--slots", "10", "--session-hours", "4"],
    ],
)
def test_simulate_refuses_mixed_arrival_models(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Options of the other arrival model, or a session without a length, exit 2."""
    argv = ["capacity", "simulate", "--service-rate", "4", "--servers", "1", *extra]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_simulate_refuses_an_unstable_steady_state(capsys: pytest.CaptureFixture[str]) -> None:
    """Steady-state simulation of ρ >= 1 exits 1: there is no steady state."""
    argv = ["capacity", "simulate", "--arrival-rate", "5", "--service-rate", "1", "--servers", "5"]
    assert main(argv) == 1
    assert "unstable" in capsys.readouterr().err
