"""Estimate a department's arrival, service and no-show rates from its booking records.

The estimator reads plain ``BookingRecord`` values, not a database: the Postgres schema
of bookings is built by the durable-record issue, and the query that yields these records
(``SELECT department_id, session_start, slot_start, status, service_minutes ...``) is
added there, next to the schema, feeding ``estimate_departments`` unchanged.

For each department:

- a session is one distinct ``session_start`` of that department with at least one
  settled booking (attended or no-show); future sessions (only ``booked``) and sessions
  whose every booking was cancelled do not count, so the rates describe sessions whose
  outcome is known;
- booked rate per hour = (attended + no-show) / (sessions x session length): the rate at
  which booked patients are due;
- no-show rate = no-show / (attended + no-show);
- service rate per hour = 60 / mean ``service_minutes`` over attended bookings that
  recorded a positive, finite duration (others are counted as discarded);
- effective arrival rate = booked rate x (1 - no-show rate): the patients who come, which
  is what the M/M/s model needs.

Every estimate carries the counts behind it so callers can judge how far to trust it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from inventory.capacity.errors import InsufficientDataError, InvalidInputError
from inventory.capacity.mms import MMsResult, mms_metrics
from inventory.capacity.validation import require_positive

_MINUTES_PER_HOUR = 60.0


class BookingStatus(enum.StrEnum):
    """Outcome of one booking as far as capacity planning cares."""

    BOOKED = "booked"
    """Still ahead: the patient may yet come or not."""
    ATTENDED = "attended"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class BookingRecord:
    """One booking of one slot, as the estimator needs it."""

    department_id: str
    session_start: datetime
    slot_start: datetime
    status: BookingStatus
    service_minutes: float | None = None
    """Length of the consultation, when the HIS recorded it (attended bookings only)."""

    def __post_init__(self) -> None:
        try:
            status = BookingStatus(self.status)
        except ValueError:
            allowed = ", ".join(s.value for s in BookingStatus)
            raise InvalidInputError(
                f"booking status must be one of {allowed}, got {self.status!r}"
            ) from None
        object.__setattr__(self, "status", status)


@dataclass(frozen=True, slots=True)
class DepartmentEstimate:
    """Rates estimated for one department, with the counts behind them."""

    department_id: str
    sessions: int
    """Sessions with at least one attended or no-show booking."""
    observed_hours: float
    """sessions x session length: the exposure behind the booked rate."""
    attended: int
    no_shows: int
    cancelled: int
    pending: int
    """Bookings still ``booked`` (outcome unknown); not used in any rate."""
    service_samples: int
    """Attended bookings with a usable consultation length."""
    service_discarded: int
    """Attended bookings whose consultation length was missing, zero, negative or NaN."""
    booked_rate_per_hour: float | None
    """(attended + no-show) per session hour; None without any settled booking."""
    no_show_rate: float | None
    """no-show / (attended + no-show); None without any settled booking."""
    service_rate_per_hour: float | None
    """1 / mean consultation hours; None without any service sample."""
    mean_service_minutes: float | None = field(default=None)

    @property
    def effective_arrival_rate_per_hour(self) -> float | None:
        """Patients who actually come per hour: booked rate x (1 - no-show rate)."""
        if self.booked_rate_per_hour is None or self.no_show_rate is None:
            return None
        return self.booked_rate_per_hour * (1.0 - self.no_show_rate)


@dataclass(slots=True)
class _Tally:
    sessions: set[datetime] = field(default_factory=set)
    attended: int = 0
    no_shows: int = 0
    cancelled: int = 0
    pending: int = 0
    service_minutes_total: float = 0.0
    service_samples: int = 0
    service_discarded: int = 0


def estimate_departments(
    records: Iterable[BookingRecord], *, session_hours: float | Mapping[str, float]
) -> dict[str, DepartmentEstimate]:
    """Per-department estimates from booking records, keyed by department id.

    ``session_hours`` is the length of one session: one number for every department, or a
    mapping from department id to length (a department missing from it is refused).
    """
    tallies: dict[str, _Tally] = {}
    for record in records:
        tally = tallies.setdefault(record.department_id, _Tally())
        match record.status:
            case BookingStatus.ATTENDED:
                tally.attended += 1
                tally.sessions.add(record.session_start)
                minutes = record.service_minutes
                if minutes is not None and math.isfinite(minutes) and minutes > 0.0:
                    tally.service_minutes_total += minutes
                    tally.service_samples += 1
                else:
                    tally.service_discarded += 1
            case BookingStatus.NO_SHOW:
                tally.no_shows += 1
                tally.sessions.add(record.session_start)
            case BookingStatus.CANCELLED:
                tally.cancelled += 1
            case BookingStatus.BOOKED:
                tally.pending += 1
    return {
        department: _finish(department, tally, _session_length(session_hours, department))
        for department, tally in tallies.items()
    }


def mms_for_department(estimate: DepartmentEstimate, servers: int) -> MMsResult:
    """Feed a department estimate into the M/M/s model with ``servers`` doctors.

    Uses the effective arrival rate (booked rate x (1 - no-show rate)) and the estimated
    service rate. Raises InsufficientDataError when either is missing or the effective
    rate is 0 (every booked patient was a no-show), and the M/M/s refusals otherwise.
    """
    arrival = estimate.effective_arrival_rate_per_hour
    if arrival is None or arrival <= 0.0:
        raise InsufficientDataError(
            f"department {estimate.department_id!r}: no attended bookings in settled "
            "sessions, so there is no arrival rate to model"
        )
    if estimate.service_rate_per_hour is None:
        raise InsufficientDataError(
            f"department {estimate.department_id!r}: no attended booking recorded a "
            "consultation length, so there is no service rate to model"
        )
    return mms_metrics(arrival, estimate.service_rate_per_hour, servers)


def _session_length(session_hours: float | Mapping[str, float], department: str) -> float:
    if isinstance(session_hours, Mapping):
        if department not in session_hours:
            raise InvalidInputError(f"no session length given for department {department!r}")
        return require_positive(f"session length of {department!r}", session_hours[department])
    return require_positive("session length (hours)", session_hours)


def _finish(department: str, tally: _Tally, session_hours: float) -> DepartmentEstimate:
    settled = tally.attended + tally.no_shows
    observed_hours = len(tally.sessions) * session_hours
    mean_minutes = (
        tally.service_minutes_total / tally.service_samples if tally.service_samples else None
    )
    return DepartmentEstimate(
        department_id=department,
        sessions=len(tally.sessions),
        observed_hours=observed_hours,
        attended=tally.attended,
        no_shows=tally.no_shows,
        cancelled=tally.cancelled,
        pending=tally.pending,
        service_samples=tally.service_samples,
        service_discarded=tally.service_discarded,
        booked_rate_per_hour=settled / observed_hours if settled else None,
        no_show_rate=tally.no_shows / settled if settled else None,
        service_rate_per_hour=(
            _MINUTES_PER_HOUR / mean_minutes if mean_minutes is not None else None
        ),
        mean_service_minutes=mean_minutes,
    )
