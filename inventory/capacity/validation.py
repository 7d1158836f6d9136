"""Checks shared by every entry point of the capacity model; each raises InvalidInputError."""

from __future__ import annotations

import math
import numbers

from inventory.capacity.errors import InvalidInputError

# Erlang B is evaluated by an O(s) recurrence; a million doctors is far beyond any
# hospital and keeps a single evaluation well under a second.
MAX_SERVERS = 1_000_000


def require_positive(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else refuse it."""
    number = _require_real(name, value)
    if not math.isfinite(number) or number <= 0.0:
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def require_non_negative(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else refuse it."""
    number = _require_real(name, value)
    if not math.isfinite(number) or number < 0.0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def require_probability(name: str, value: float, *, allow_one: bool = False) -> float:
    """Return ``value`` if it lies in [0, 1) (or [0, 1] with ``allow_one``), else refuse it."""
    number = _require_real(name, value)
    upper_ok = number <= 1.0 if allow_one else number < 1.0
    if not (number >= 0.0 and upper_ok):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise InvalidInputError(f"{name} must lie in {interval}, got {value!r}")
    return number


def require_count(name: str, value: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer (not a bool or float) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    count = int(value)
    if count < minimum:
        raise InvalidInputError(f"{name} must be at least {minimum}, got {count}")
    if maximum is not None and count > maximum:
        raise InvalidInputError(f"{name} must be at most {maximum:,}, got {count:,}")
    return count


def require_servers(value: int) -> int:
    """Return the number of servers (doctors) if it is an integer in [1, MAX_SERVERS]."""
    return require_count("servers", value, minimum=1, maximum=MAX_SERVERS)


def _require_real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    return float(value)
