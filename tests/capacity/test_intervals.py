"""Student-t critical values and intervals, checked against scipy."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from inventory.capacity import InvalidInputError
from inventory.capacity.intervals import (
    mean_with_interval,
    student_t_critical,
    student_t_two_sided_probability,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 19, 30, 99, 1999])
@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99, 0.999])
def test_t_critical_value_matches_scipy(df: int, confidence: float) -> None:
    """The exact A&S closed form plus bisection agrees with scipy's t.ppf to 1e-9."""
    expected = float(stats.t.ppf(0.5 + confidence / 2, df))
    assert student_t_critical(confidence, df) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("df", [1, 2, 7, 8, 50])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 2.5, 12.0])
def test_two_sided_probability_matches_scipy(df: int, t: float) -> None:
    """P(|T| <= t) agrees with 2·F(t) - 1 from scipy."""
    expected = 2 * float(stats.t.cdf(t, df)) - 1
    assert student_t_two_sided_probability(t, df) == pytest.approx(expected, abs=1e-13)


def test_mean_with_interval_is_the_textbook_t_interval() -> None:
    """mean ± t(0.975, n-1)·s/√n for a small sample."""
    samples = [1.0, 2.0, 4.0, 7.0]
    estimate = mean_with_interval(samples, 0.95)
    sd = math.sqrt(sum((x - 3.5) ** 2 for x in samples) / 3)
    assert estimate.mean == 3.5
    assert estimate.half_width == pytest.approx(3.182446305284263 * sd / 2, rel=1e-9)
    assert estimate.covers(3.5)
    assert not estimate.covers(estimate.high + 1e-9)
    assert estimate.samples == 4


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, math.nan])
def test_confidence_outside_zero_one_is_refused(confidence: float) -> None:
    """Confidence levels outside (0, 1) raise InvalidInputError."""
    with pytest.raises(InvalidInputError, match="confidence"):
        student_t_critical(confidence, 5)


def test_interval_needs_two_finite_samples() -> None:
    """One sample, or a NaN among them, gives no interval."""
    with pytest.raises(InvalidInputError, match="at least 2"):
        mean_with_interval([1.0], 0.95)
    with pytest.raises(InvalidInputError, match="finite"):
        mean_with_interval([1.0, math.nan], 0.95)
