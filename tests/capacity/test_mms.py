"""Exact M/M/s figures: published values, independent oracles, stability, identities."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.capacity import (
    CapacityError,
    InvalidInputError,
    UnstableSystemError,
    erlang_b,
    erlang_c,
    mms_metrics,
)


def exact_erlang_c(servers: int, load: Fraction) -> Fraction:
    """Textbook Erlang C with exact factorials and powers, in rational arithmetic."""
    top = load**servers / math.factorial(servers) * Fraction(servers) / (servers - load)
    below = sum(load**k / math.factorial(k) for k in range(servers))
    return top / (below + top)


def exact_erlang_c_large(servers: int, load: Fraction) -> Fraction:
    """The same textbook sum for large s, its terms a^k/k! built one from the last, exactly."""
    term, below = Fraction(1), Fraction(0)
    for k in range(servers):
        below += term
        term = term * load / (k + 1)
    top = term * servers / (servers - load)
    return top / (below + top)


def log_space_erlang_c(servers: int, load: float) -> float:
    """Erlang C from the same textbook sum, evaluated in log space (lgamma, log-sum-exp)."""
    log_load = math.log(load)
    logs = [k * log_load - math.lgamma(k + 1) for k in range(servers)]
    log_top = servers * log_load - math.lgamma(servers + 1) + math.log(servers / (servers - load))
    logs.append(log_top)
    peak = max(logs)
    return math.exp(log_top - peak) / math.fsum(math.exp(x - peak) for x in logs)


# Hillier & Lieberman, "Introduction to Operations Research", queueing chapter, the County
# Hospital emergency-room example: λ = 2 patients/h, μ = 3 patients/h, one or two doctors.
# Published (exact) figures: s = 1: ρ = 2/3, Lq = 4/3, L = 2, Wq = 2/3 h, W = 1 h;
# s = 2: ρ = 1/3, P0 = 1/2, Lq = 1/12, L = 3/4, Wq = 1/24 h, W = 3/8 h.
COUNTY_HOSPITAL = [
    (1, 2 / 3, 4 / 3, 2.0, 2 / 3, 1.0),
    (2, 1 / 3, 1 / 12, 3 / 4, 1 / 24, 3 / 8),
]


@pytest.mark.parametrize(("servers", "rho", "lq", "big_l", "wq", "w"), COUNTY_HOSPITAL)
def test_county_hospital_example_matches_published_figures(
    servers: int, rho: float, lq: float, big_l: float, wq: float, w: float
) -> None:
    """λ=2, μ=3 with one and two doctors reproduces Hillier & Lieberman's table."""
    result = mms_metrics(2.0, 3.0, servers)
    assert result.utilization == pytest.approx(rho, rel=1e-12)
    assert result.lq == pytest.approx(lq, rel=1e-12)
    assert result.l == pytest.approx(big_l, rel=1e-12)
    assert result.wq_hours == pytest.approx(wq, rel=1e-12)
    assert result.w_hours == pytest.approx(w, rel=1e-12)


def test_erlang_c_three_servers_two_erlangs_is_four_ninths() -> None:
    """C(3, 2) = 4/9, the basic example of Wolfram Language's ErlangC documentation."""
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-14)


# Call Centre Helper, "Erlang C Formula - Made Simple With an Easy Worked Example": 100 calls
# per 30 minutes with 180 s handling time = 10 Erlangs on 11 agents; a call waits with
# probability 68.21 %.
def test_call_centre_worked_example_ten_erlangs_eleven_agents() -> None:
    """C(11, 10) rounds to the published 0.6821."""
    assert round(erlang_c(11, 10.0), 4) == 0.6821
    assert mms_metrics(200.0, 20.0, 11).p_wait == pytest.approx(erlang_c(11, 10.0), rel=1e-15)


@pytest.mark.parametrize("servers", [1, 2, 3, 5, 8, 13, 21, 34])
@pytest.mark.parametrize("rho", ["0.05", "0.5", "0.8", "0.95", "0.999"])
def test_erlang_c_matches_exact_rational_oracle(servers: int, rho: str) -> None:
    """The recurrence agrees with exact factorial arithmetic to 1e-12 relative."""
    load = Fraction(rho) * servers
    result = mms_metrics(float(load) * 1.5, 1.5, servers)
    assert result.p_wait == pytest.approx(float(exact_erlang_c(servers, load)), rel=1e-12)


@pytest.mark.parametrize(
    ("servers", "rho"),
    [(500, 0.5), (500, 0.95), (500, 0.999), (2000, 0.9), (2000, 0.999), (2000, 0.99999)],
)
def test_hundreds_and_thousands_of_servers_are_stable(servers: int, rho: float) -> None:
    """s=500 and s=2000 near ρ=1 give finite, in-range figures matching a log-space oracle."""
    load = rho * servers
    result = mms_metrics(load * 2.0, 2.0, servers)
    figures = (result.utilization, result.p_wait, result.wq_hours, result.lq, result.l)
    assert all(math.isfinite(x) for x in figures)
    assert 0.0 < result.p_wait <= 1.0
    assert result.wq_hours > 0.0
    assert result.p_wait == pytest.approx(log_space_erlang_c(servers, load), rel=1e-9)


@pytest.mark.parametrize(("servers", "rho"), [(500, "0.999"), (2000, "0.999")])
def test_thousands_of_servers_match_exact_rational_arithmetic(servers: int, rho: str) -> None:
    """s=500 and s=2000 at ρ=0.999 agree with exact rationals to 1e-13 relative."""
    load = Fraction(rho) * servers
    exact = float(exact_erlang_c_large(servers, load))
    assert erlang_c(servers, float(load)) == pytest.approx(exact, rel=1e-13)


def test_erlang_b_does_not_overflow_or_go_negative_for_huge_systems() -> None:
    """Erlang B stays in [0, 1] for 100 000 servers at light and heavy load."""
    for load in (1.0, 50_000.0, 99_999.0):
        value = erlang_b(100_000, load)
        assert 0.0 <= value <= 1.0
    assert erlang_b(100_000, 1.0) == 0.0  # underflows gracefully, never NaN


def test_erlang_b_matches_exact_loss_formula() -> None:
    """B(s, a) = (a^s/s!) / sum_k a^k/k! for small s, exactly."""
    for servers in range(1, 12):
        load = Fraction(7, 2)
        terms = [load**k / math.factorial(k) for k in range(servers + 1)]
        assert erlang_b(servers, 3.5) == pytest.approx(float(terms[-1] / sum(terms)), rel=1e-13)


@given(
    rate=st.floats(min_value=1e-3, max_value=1e3),
    rho=st.floats(min_value=1e-4, max_value=0.9999),
)
def test_single_server_equals_mm1_closed_forms(rate: float, rho: float) -> None:
    """s=1: P(wait)=ρ, Wq=ρ/(μ-λ), W=1/(μ-λ), Lq=ρ²/(1-ρ), L=ρ/(1-ρ)."""
    arrival = rho * rate
    result = mms_metrics(arrival, rate, 1)
    rho = result.utilization
    assert result.p_wait == pytest.approx(rho, rel=1e-9)
    assert result.wq_hours == pytest.approx(rho / (rate - arrival), rel=1e-9)
    assert result.w_hours == pytest.approx(1.0 / (rate - arrival), rel=1e-9)
    assert result.lq == pytest.approx(rho**2 / (1.0 - rho), rel=1e-9)
    assert result.l == pytest.approx(rho / (1.0 - rho), rel=1e-9)


@given(
    service=st.floats(min_value=0.1, max_value=20.0),
    servers=st.integers(min_value=1, max_value=300),
    rho=st.floats(min_value=1e-3, max_value=0.999),
)
def test_littles_law_and_figure_identities_hold(service: float, servers: int, rho: float) -> None:
    """Lq=λWq, L=λW, W=Wq+1/μ, L=Lq+λ/μ, and every figure is in range."""
    arrival = rho * servers * service
    result = mms_metrics(arrival, service, servers)
    assert result.lq == pytest.approx(arrival * result.wq_hours, rel=1e-12)
    assert result.l == pytest.approx(arrival * result.w_hours, rel=1e-12)
    assert result.w_hours == pytest.approx(result.wq_hours + 1.0 / service, rel=1e-12)
    assert result.l == pytest.approx(result.lq + result.offered_load, rel=1e-9)
    assert 0.0 < result.utilization < 1.0
    assert 0.0 <= result.p_wait <= 1.0


@given(
    servers=st.integers(min_value=1, max_value=100),
    rho=st.floats(min_value=0.01, max_value=0.98),
)
def test_wait_falls_with_more_doctors_and_rises_with_more_patients(
    servers: int, rho: float
) -> None:
    """Wq(s+1) < Wq(s) and Wq(1.01λ) > Wq(λ)."""
    arrival = rho * servers
    base = mms_metrics(arrival, 1.0, servers).wq_hours
    assert mms_metrics(arrival, 1.0, servers + 1).wq_hours < base
    if arrival * 1.01 < servers:
        assert mms_metrics(arrival * 1.01, 1.0, servers).wq_hours > base


@pytest.mark.parametrize(("arrival", "servers"), [(3.0, 3), (3.0000001, 3), (100.0, 2)])
def test_unstable_system_is_refused(arrival: float, servers: int) -> None:
    """ρ >= 1 raises UnstableSystemError, a ValueError naming the utilisation."""
    with pytest.raises(UnstableSystemError, match="utilisation") as caught:
        mms_metrics(arrival, 1.0, servers)
    assert isinstance(caught.value, ValueError)
    assert caught.value.utilization >= 1.0
    assert caught.value.code == "capacity_unstable"


@pytest.mark.parametrize(
    ("arrival", "service", "servers", "message"),
    [
        (-1.0, 1.0, 2, "arrival rate"),
        (0.0, 1.0, 2, "arrival rate"),
        (math.nan, 1.0, 2, "arrival rate"),
        (math.inf, 1.0, 2, "arrival rate"),
        (1.0, 0.0, 2, "service rate"),
        (1.0, -2.0, 2, "service rate"),
        (1.0, math.nan, 2, "service rate"),
        (1.0, 1.0, 0, "servers"),
        (1.0, 1.0, -3, "servers"),
        (1.0, 1.0, 2.5, "servers"),
        (1.0, 1.0, 2.0, "servers"),
        (1.0, 1.0, True, "servers"),
        (1.0, 1.0, "3", "servers"),
        (1.0, 1.0, 2_000_000, "servers"),
        (1e300, 1e-300, 2, "offered load"),
    ],
)
def test_nonsense_input_is_refused_with_a_typed_error(
    arrival: float, service: float, servers: int, message: str
) -> None:
    """Non-finite, non-positive, non-integer or absurd input raises InvalidInputError."""
    with pytest.raises(InvalidInputError, match=message) as caught:
        mms_metrics(arrival, service, servers)
    assert isinstance(caught.value, CapacityError)
    assert isinstance(caught.value, ValueError)


def test_result_is_frozen_and_carries_its_inputs() -> None:
    """MMsResult records λ, μ, s and cannot be modified."""
    result = mms_metrics(5.0, 2.0, 3)
    assert (result.arrival_rate, result.service_rate, result.servers) == (5.0, 2.0, 3)
    assert result.offered_load == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.servers = 4  # type: ignore[misc]
