"""Estimating arrival, service and no-show rates from booking records."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from inventory.capacity import (
    BookingRecord,
    BookingStatus,
    InsufficientDataError,
    InvalidInputError,
    estimate_departments,
    mms_for_department,
    mms_metrics,
)

MONDAY = datetime(2026, 3, 2, 8, 0)


def booking(
    department: str,
    day: int,
    status: BookingStatus | str,
    minutes: float | None = None,
    slot: int = 0,
) -> BookingRecord:
    """One booking in the 08:00 session ``day`` days after Monday."""
    session = MONDAY + timedelta(days=day)
    return BookingRecord(
        department_id=department,
        session_start=session,
        slot_start=session + timedelta(minutes=15 * slot),
        status=status,  # type: ignore[arg-type]
        service_minutes=minutes,
    )


def test_rates_and_counts_from_a_small_ledger() -> None:
    """Booked rate, no-show rate and service rate follow the documented definitions."""
    records = [
        booking("cardio", 0, BookingStatus.ATTENDED, 10.0),
        booking("cardio", 0, BookingStatus.ATTENDED, 20.0, slot=1),
        booking("cardio", 0, BookingStatus.NO_SHOW, slot=2),
        booking("cardio", 1, BookingStatus.ATTENDED, 30.0),
        booking("cardio", 1, BookingStatus.CANCELLED, slot=1),
        booking("cardio", 2, BookingStatus.BOOKED),  # future session: not observed
        booking("derm", 0, BookingStatus.NO_SHOW),
    ]
    estimates = estimate_departments(records, session_hours=4.0)
    cardio = estimates["cardio"]
    assert (cardio.sessions, cardio.attended, cardio.no_shows) == (2, 3, 1)
    assert (cardio.cancelled, cardio.pending, cardio.service_samples) == (1, 1, 3)
    assert cardio.observed_hours == 8.0
    assert cardio.booked_rate_per_hour == pytest.approx(4 / 8)
    assert cardio.no_show_rate == pytest.approx(1 / 4)
    assert cardio.mean_service_minutes == pytest.approx(20.0)
    assert cardio.service_rate_per_hour == pytest.approx(3.0)
    assert cardio.effective_arrival_rate_per_hour == pytest.approx(0.5 * 0.75)
    derm = estimates["derm"]
    assert derm.no_show_rate == 1.0
    assert derm.service_rate_per_hour is None
    assert derm.effective_arrival_rate_per_hour == 0.0


def test_unusable_service_lengths_are_discarded_and_counted() -> None:
    """Attended bookings with a missing, zero, negative or NaN length do not bias μ."""
    records = [
        booking("ent", 0, BookingStatus.ATTENDED, 12.0),
        booking("ent", 0, BookingStatus.ATTENDED, None),
        booking("ent", 0, BookingStatus.ATTENDED, 0.0),
        booking("ent", 0, BookingStatus.ATTENDED, -5.0),
        booking("ent", 0, BookingStatus.ATTENDED, math.nan),
        booking("ent", 0, BookingStatus.NO_SHOW, 99.0),  # a no-show's length is ignored
    ]
    ent = estimate_departments(records, session_hours=3.0)["ent"]
    assert (ent.service_samples, ent.service_discarded) == (1, 4)
    assert ent.service_rate_per_hour == pytest.approx(5.0)


def test_session_length_per_department() -> None:
    """A mapping gives each department its own session length; a missing one is refused."""
    records = [booking("a", 0, "attended", 10.0), booking("b", 0, "attended", 10.0)]
    estimates = estimate_departments(records, session_hours={"a": 2.0, "b": 4.0})
    assert estimates["a"].booked_rate_per_hour == 0.5
    assert estimates["b"].booked_rate_per_hour == 0.25
    with pytest.raises(InvalidInputError, match="'b'"):
        estimate_departments(records, session_hours={"a": 2.0})
    with pytest.raises(InvalidInputError, match="session length"):
        estimate_departments(records, session_hours=0.0)


def test_status_strings_are_accepted_and_unknown_ones_refused() -> None:
    """'attended' becomes BookingStatus.ATTENDED; 'lost' raises InvalidInputError."""
    assert booking("a", 0, "no_show").status is BookingStatus.NO_SHOW
    with pytest.raises(InvalidInputError, match="booking status"):
        booking("a", 0, "lost")


def test_estimate_feeds_the_model_with_the_effective_rate() -> None:
    """mms_for_department uses booked rate x (1 - no-show rate) and 60 / mean minutes."""
    records = [booking("gp", day, "attended", 15.0, slot=k) for day in range(5) for k in range(9)]
    records += [booking("gp", day, "no_show", slot=9) for day in range(5)]
    estimate = estimate_departments(records, session_hours=4.0)["gp"]
    result = mms_for_department(estimate, servers=3)
    assert result == mms_metrics(50 / 20 * (1 - 5 / 50), 4.0, 3)


def test_model_needs_an_arrival_and_a_service_rate() -> None:
    """Without attended patients or without consultation lengths there is nothing to model."""
    only_no_shows = estimate_departments([booking("a", 0, "no_show")], session_hours=4.0)["a"]
    with pytest.raises(InsufficientDataError, match="arrival rate"):
        mms_for_department(only_no_shows, servers=1)
    no_lengths = estimate_departments([booking("b", 0, "attended")], session_hours=4.0)["b"]
    with pytest.raises(InsufficientDataError, match="service rate"):
        mms_for_department(no_lengths, servers=1)


def test_estimator_recovers_the_rates_that_generated_the_records() -> None:
    """Records drawn from known λ, μ and no-show rate give estimates close to them."""
    rng = np.random.default_rng(2026)
    booked_rate, no_show, mean_minutes, hours = 6.0, 0.15, 12.0, 4.0
    records = []
    for day in range(400):
        for slot in range(int(rng.poisson(booked_rate * hours))):
            if rng.random() < no_show:
                records.append(booking("ortho", day, "no_show", slot=slot))
            else:
                minutes = float(rng.exponential(mean_minutes))
                records.append(booking("ortho", day, "attended", minutes, slot=slot))
    estimate = estimate_departments(records, session_hours=hours)["ortho"]
    assert estimate.sessions == 400
    assert estimate.booked_rate_per_hour == pytest.approx(booked_rate, rel=0.03)
    assert estimate.no_show_rate == pytest.approx(no_show, abs=0.02)
    assert estimate.service_rate_per_hour == pytest.approx(60 / mean_minutes, rel=0.04)
