"""Inverse questions: fewest doctors, most patients per hour, slots per session."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.capacity import (
    InvalidInputError,
    UnstableSystemError,
    max_arrival_rate_for_wait,
    min_servers_for_wait,
    mms_metrics,
    slots_per_session,
)


def wait_or_inf(arrival: float, service: float, servers: int) -> float:
    """Wq of the model, or infinity where the system is unstable."""
    try:
        return mms_metrics(arrival, service, servers).wq_hours
    except UnstableSystemError:
        return math.inf


@settings(max_examples=200, deadline=None)
@given(
    arrival=st.floats(min_value=0.01, max_value=500.0),
    service=st.floats(min_value=0.2, max_value=12.0),
    target=st.floats(min_value=1e-4, max_value=5.0),
)
def test_min_servers_is_the_smallest_meeting_the_target(
    arrival: float, service: float, target: float
) -> None:
    """min_servers_for_wait's s meets Wq <= target and s-1 does not (or is unstable)."""
    servers = min_servers_for_wait(arrival, service, target)
    assert mms_metrics(arrival, service, servers).wq_hours <= target
    if servers > 1:
        assert wait_or_inf(arrival, service, servers - 1) > target


@settings(max_examples=200, deadline=None)
@given(
    service=st.floats(min_value=0.2, max_value=12.0),
    servers=st.integers(min_value=1, max_value=60),
    target=st.floats(min_value=1e-4, max_value=5.0),
)
def test_max_arrival_rate_meets_the_target_and_a_little_more_does_not(
    service: float, servers: int, target: float
) -> None:
    """λ* meets Wq <= target, stays below sμ, and λ*(1 + 1e-9) misses the target."""
    rate = max_arrival_rate_for_wait(service, servers, target)
    assert 0.0 < rate < servers * service
    assert mms_metrics(rate, service, servers).wq_hours <= target
    assert wait_or_inf(rate * (1.0 + 1e-9), service, servers) > target


def test_call_centre_table_needs_fourteen_agents_for_a_five_minute_wait() -> None:
    """At 10 Erlangs, Wq(13) ≈ 5.7 min and Wq(14) ≈ 2.6 min, so 14 for a 5-minute target."""
    assert min_servers_for_wait(10.0, 1.0, 5 / 60) == 14
    assert mms_metrics(10.0, 1.0, 13).wq_hours * 60 == pytest.approx(5.706, abs=1e-3)


def test_min_servers_works_for_thousands_of_doctors() -> None:
    """λ=1900/h, μ=1/h with a one-minute target needs a stable staffing just above 1900."""
    servers = min_servers_for_wait(1900.0, 1.0, 1 / 60)
    assert 1900 < servers < 2000
    assert mms_metrics(1900.0, 1.0, servers).wq_hours <= 1 / 60


def test_max_rate_for_many_doctors_is_close_to_capacity() -> None:
    """2000 doctors with a generous target take almost 2000μ, still strictly below it."""
    rate = max_arrival_rate_for_wait(1.0, 2000, 0.5)
    assert 1990.0 < rate < 2000.0


def test_inverse_questions_agree_with_each_other() -> None:
    """The fewest doctors for λ can take λ; one doctor fewer cannot."""
    arrival, service, target = 7.3, 1.7, 0.1
    servers = min_servers_for_wait(arrival, service, target)
    assert max_arrival_rate_for_wait(service, servers, target) >= arrival
    assert max_arrival_rate_for_wait(service, servers - 1, target) < arrival


@pytest.mark.parametrize("target", [0.0, -1.0, math.nan, math.inf])
def test_wait_target_must_be_positive_and_finite(target: float) -> None:
    """A target of 0 (unreachable: Wq > 0 whenever λ > 0), negative or non-finite is refused."""
    with pytest.raises(InvalidInputError, match="max wait"):
        min_servers_for_wait(1.0, 1.0, target)
    with pytest.raises(InvalidInputError, match="max wait"):
        max_arrival_rate_for_wait(1.0, 2, target)


def test_inverse_questions_refuse_nonsense_rates_and_servers() -> None:
    """Bad λ, μ or s in the inverse questions raise InvalidInputError."""
    with pytest.raises(InvalidInputError):
        min_servers_for_wait(-1.0, 1.0, 0.1)
    with pytest.raises(InvalidInputError):
        min_servers_for_wait(1.0, math.nan, 0.1)
    with pytest.raises(InvalidInputError):
        max_arrival_rate_for_wait(1.0, 0, 0.1)
    with pytest.raises(InvalidInputError):
        max_arrival_rate_for_wait(1.0, 1.5, 0.1)  # type: ignore[arg-type]


def test_slots_per_session_rounds_down_and_scales_for_no_shows() -> None:
    """floor(rate·H) slots, and floor(rate·H/(1-p)) when a share p does not come."""
    assert slots_per_session(8.9, 4.0) == 35
    assert slots_per_session(9.0, 4.0) == 36
    assert slots_per_session(8.9, 4.0, no_show_rate=0.2) == 44
    assert slots_per_session(0.0, 4.0) == 0


def test_released_slots_keep_the_wait_target() -> None:
    """Booking the suggested slots (after no-shows) keeps Wq within the target."""
    service, servers, target, hours, no_show = 3.0, 4, 10 / 60, 4.0, 0.15
    slots = slots_per_session(
        max_arrival_rate_for_wait(service, servers, target), hours, no_show_rate=no_show
    )
    coming_rate = slots * (1.0 - no_show) / hours
    assert mms_metrics(coming_rate, service, servers).wq_hours <= target
    one_more_rate = (slots + 1) * (1.0 - no_show) / hours
    assert wait_or_inf(one_more_rate, service, servers) > target


@pytest.mark.parametrize(
    ("rate", "hours", "no_show"),
    [(-1.0, 4.0, 0.0), (math.nan, 4.0, 0.0), (1.0, 0.0, 0.0), (1.0, 4.0, 1.0), (1.0, 4.0, -0.1)],
)
def test_slots_per_session_refuses_nonsense(rate: float, hours: float, no_show: float) -> None:
    """Negative or NaN rate, empty session, or a no-show rate outside [0, 1) are refused."""
    with pytest.raises(InvalidInputError):
        slots_per_session(rate, hours, no_show_rate=no_show)
