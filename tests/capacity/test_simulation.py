"""Simulation: confirms the M/M/s formulas, and models booked slots, no-shows and lateness."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from inventory.capacity import (
    InvalidInputError,
    SessionScenario,
    UnstableSystemError,
    mms_metrics,
    simulate_mms,
    simulate_session,
)

FIGURES = ("utilization", "p_wait", "wq_hours", "w_hours", "lq", "l")


@pytest.mark.parametrize(
    ("arrival", "service", "servers", "seed"),
    [(2.0, 3.0, 1, 11), (10.0, 1.0, 12, 12), (30.0, 4.0, 10, 13)],
)
def test_simulation_confirms_the_formulas_within_confidence_intervals(
    arrival: float, service: float, servers: int, seed: int
) -> None:
    """Every exact M/M/s figure lies inside the 99 % batch-means interval (fixed seeds)."""
    exact = mms_metrics(arrival, service, servers)
    simulated = simulate_mms(arrival, service, servers, seed=seed, confidence=0.99)
    for name in FIGURES:
        estimate = getattr(simulated, name)
        assert estimate.covers(getattr(exact, name)), (name, estimate, getattr(exact, name))
        # Tight enough to mean something: within 15 % of the exact value.
        assert estimate.half_width < 0.15 * getattr(exact, name), name
    assert simulated.method == "batch_means"
    assert simulated.overtime_hours is None
    assert simulated.patients == 200_000


def test_same_seed_same_result_other_seed_other_result() -> None:
    """Simulations are reproducible from their seed."""
    first = simulate_mms(4.0, 1.0, 5, seed=7, patients=20_000, warmup_patients=2_000)
    again = simulate_mms(4.0, 1.0, 5, seed=7, patients=20_000, warmup_patients=2_000)
    other = simulate_mms(4.0, 1.0, 5, seed=8, patients=20_000, warmup_patients=2_000)
    assert first == again
    assert first.wq_hours.mean != other.wq_hours.mean


def test_steady_state_simulation_refuses_an_unstable_system() -> None:
    """There is no steady state to estimate when ρ >= 1."""
    with pytest.raises(UnstableSystemError):
        simulate_mms(5.0, 1.0, 5, seed=0)


def clinic(**changes: Any) -> SessionScenario:
    """A morning clinic: 30 slots in 4 h, 2 doctors seeing 4.5 patients/h each."""
    base = SessionScenario(slots=30, session_hours=4.0, servers=2, service_rate=4.5)
    return dataclasses.replace(base, **changes)


def test_session_utilisation_is_offered_work_over_doctor_time() -> None:
    """Utilisation ≈ (1-p)·N/(H·s·μ), inside the 99 % interval, with and without no-shows."""
    for no_show in (0.0, 0.25):
        scenario = clinic(no_show_probability=no_show)
        result = simulate_session(scenario, seed=21, replications=2_000, confidence=0.99)
        expected = (1 - no_show) * 30 / (4.0 * 2 * 4.5)
        assert scenario.expected_utilization == pytest.approx(expected)
        assert result.utilization.covers(expected), (no_show, result.utilization)


def test_no_shows_reduce_the_wait() -> None:
    """With the same patients (same seed), 25 % no-shows cut mean wait, queue and overtime."""
    full = simulate_session(clinic(), seed=5, replications=2_000)
    thinned = simulate_session(clinic(no_show_probability=0.25), seed=5, replications=2_000)
    assert thinned.wq_hours.high < full.wq_hours.low
    assert thinned.lq.high < full.lq.low
    assert thinned.p_wait.high < full.p_wait.low
    assert thinned.overtime_hours is not None
    assert full.overtime_hours is not None
    assert thinned.overtime_hours.mean < full.overtime_hours.mean
    assert thinned.patients < full.patients


def test_booked_slots_wait_less_than_poisson_arrivals_at_the_same_rate() -> None:
    """Evenly spaced arrivals are far less bursty than Poisson: Wq well below Erlang C's."""
    scenario = clinic(no_show_probability=0.1)
    result = simulate_session(scenario, seed=3, replications=2_000)
    poisson = mms_metrics(scenario.expected_arrival_rate, 4.5, 2)
    assert result.wq_hours.high < poisson.wq_hours
    assert result.p_wait.high < poisson.p_wait


def test_late_patients_push_the_session_into_overtime() -> None:
    """Everyone 20 min late on average lengthens overtime compared with punctual patients."""
    punctual = simulate_session(clinic(), seed=9, replications=1_000)
    late = simulate_session(
        clinic(late_probability=1.0, late_mean_minutes=20.0), seed=9, replications=1_000
    )
    assert late.overtime_hours is not None
    assert punctual.overtime_hours is not None
    assert late.overtime_hours.low > punctual.overtime_hours.high


def test_nobody_waits_when_every_patient_has_a_doctor() -> None:
    """With at least as many doctors as slots, no patient ever waits."""
    scenario = SessionScenario(
        slots=6, session_hours=1.0, servers=6, service_rate=0.5, jitter_sd_minutes=10.0
    )
    result = simulate_session(scenario, seed=1, replications=200)
    assert result.p_wait.mean == 0.0
    assert result.wq_hours.mean == 0.0
    assert result.lq.mean == 0.0


def test_session_figures_are_consistent() -> None:
    """W = Wq + mean consultation (1/μ) within error, L >= Lq, overtime >= 0."""
    result = simulate_session(
        clinic(jitter_sd_minutes=5.0, late_probability=0.2, late_mean_minutes=10.0),
        seed=4,
        replications=2_000,
        confidence=0.99,
    )
    assert result.w_hours.mean - result.wq_hours.mean == pytest.approx(1 / 4.5, rel=0.03)
    assert result.l.mean >= result.lq.mean
    assert result.overtime_hours is not None
    assert result.overtime_hours.low >= 0.0
    assert result.method == "replications"
    assert result.utilization.samples == 2_000


@pytest.mark.parametrize(
    "changes",
    [
        {"slots": 0},
        {"session_hours": 0.0},
        {"servers": 0},
        {"service_rate": -1.0},
        {"no_show_probability": 1.0},
        {"no_show_probability": -0.1},
        {"jitter_sd_minutes": -1.0},
        {"late_probability": 1.5},
        {"late_mean_minutes": float("nan")},
    ],
)
def test_session_scenario_refuses_nonsense(changes: dict[str, float]) -> None:
    """A scenario with a non-positive size, rate or a probability out of range is refused."""
    with pytest.raises(InvalidInputError):
        clinic(**changes)


def test_simulation_refuses_bad_run_settings() -> None:
    """Fewer than two batches or replications, or a negative seed, give no interval."""
    with pytest.raises(InvalidInputError, match="batches"):
        simulate_mms(1.0, 2.0, 1, seed=0, batches=1)
    with pytest.raises(InvalidInputError, match="replications"):
        simulate_session(clinic(), seed=0, replications=1)
    with pytest.raises(InvalidInputError, match="seed"):
        simulate_session(clinic(), seed=-1)
