"""Confidence intervals for simulation output: Student-t intervals on independent samples.

Only numpy is a runtime dependency, so the t critical value is computed here, exactly, from
the closed forms of the Student-t distribution function for integer degrees of freedom
(Abramowitz & Stegun 26.7.3 and 26.7.4) and bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inventory.capacity.errors import InvalidInputError
from inventory.capacity.validation import require_count

# Terms of the A&S series shrink geometrically; below this they no longer change a double.
_NEGLIGIBLE_TERM = 1e-17


@dataclass(frozen=True, slots=True)
class Estimate:
    """A sample mean with a two-sided Student-t confidence interval."""

    mean: float
    half_width: float
    confidence: float
    samples: int
    """Number of independent samples (batches or replications) behind the interval."""

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.half_width

    def covers(self, value: float) -> bool:
        """Whether ``value`` lies inside the interval (ends included)."""
        return self.low <= value <= self.high


def student_t_two_sided_probability(t: float, degrees_of_freedom: int) -> float:
    """P(|T| <= t) for T ~ Student-t with integer ``degrees_of_freedom`` (t >= 0)."""
    df = require_count("degrees of freedom", degrees_of_freedom)
    if t <= 0.0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    sin_theta, cos_sq = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= (2 * j - 1) / (2 * j) * cos_sq
            total += term
            if term < _NEGLIGIBLE_TERM:
                break
        return min(1.0, sin_theta * total)
    if df == 1:
        return 2.0 * theta / math.pi
    term = math.cos(theta)
    total = term
    for j in range(1, (df - 1) // 2):
        term *= (2 * j) / (2 * j + 1) * cos_sq
        total += term
        if term < _NEGLIGIBLE_TERM:
            break
    return min(1.0, 2.0 / math.pi * (theta + sin_theta * total))


def student_t_critical(confidence: float, degrees_of_freedom: int) -> float:
    """The t* with P(|T| <= t*) = ``confidence``, T ~ Student-t(``degrees_of_freedom``)."""
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must lie in (0, 1), got {confidence!r}")
    df = require_count("degrees of freedom", degrees_of_freedom)
    low, high = 0.0, 1.0
    while student_t_two_sided_probability(high, df) < confidence:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if not low < middle < high:
            break
        if student_t_two_sided_probability(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return high


def mean_with_interval(samples: Sequence[float] | np.ndarray, confidence: float) -> Estimate:
    """Mean of independent, roughly normal ``samples`` with a Student-t interval."""
    values = np.asarray(samples, dtype=float)
    count = int(values.size)
    if count < 2:
        raise InvalidInputError(f"a confidence interval needs at least 2 samples, got {count}")
    if not np.all(np.isfinite(values)):
        raise InvalidInputError("samples must all be finite")
    mean = float(values.mean())
    standard_error = float(values.std(ddof=1)) / math.sqrt(count)
    half_width = student_t_critical(confidence, count - 1) * standard_error
    return Estimate(mean=mean, half_width=half_width, confidence=confidence, samples=count)
