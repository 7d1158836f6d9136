"""Booking rows from Postgres turned into estimator input.

The named query ``list_department_booking_outcomes`` yields one row per booking with
``department_id``, ``session_start``, ``slot_start``, ``status`` (already mapped to the
estimator's statuses: visited -> attended, no_show, cancelled, anything else -> booked),
``service_minutes`` (the consultation's length when the HIS reported it, else NULL) and
``session_hours`` (the schedule's ends_at - starts_at). This module builds the
``BookingRecord`` values and the per-department session length, and calls
``estimate_departments``.

A department's session length is the mean length of its distinct sessions (by start
instant, the longest schedule when two start together), so ``sessions x length`` is the
total session time the estimator divides by when every session has the same length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from inventory.capacity.errors import InsufficientDataError
from inventory.capacity.estimate import (
    BookingRecord,
    BookingStatus,
    DepartmentEstimate,
    estimate_departments,
)


def records_from_rows(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[BookingRecord], dict[str, float]]:
    """The booking records of ``rows`` and each department's mean session length (hours)."""
    records: list[BookingRecord] = []
    lengths: dict[str, dict[datetime, float]] = {}
    for row in rows:
        minutes = row["service_minutes"]
        record = BookingRecord(
            department_id=str(row["department_id"]),
            session_start=row["session_start"],
            slot_start=row["slot_start"],
            status=BookingStatus(row["status"]),
            service_minutes=None if minutes is None else float(minutes),
        )
        records.append(record)
        sessions = lengths.setdefault(record.department_id, {})
        hours = float(row["session_hours"])
        sessions[record.session_start] = max(hours, sessions.get(record.session_start, 0.0))
    session_hours = {
        department: sum(by_start.values()) / len(by_start)
        for department, by_start in lengths.items()
    }
    return records, session_hours


def estimate_department(
    department_id: str, rows: Iterable[Mapping[str, Any]]
) -> DepartmentEstimate:
    """The estimate of one department from its booking rows.

    Raises InsufficientDataError when there is no booking at all, or none whose outcome
    (attended or no-show) is known.
    """
    records, session_hours = records_from_rows(
        row for row in rows if str(row["department_id"]) == department_id
    )
    if not records:
        raise InsufficientDataError(f"department {department_id!r} has no bookings in the period")
    estimate = estimate_departments(records, session_hours=session_hours)[department_id]
    if estimate.sessions == 0:
        raise InsufficientDataError(
            f"department {department_id!r} has no attended or no-show booking in the "
            "period, so there is nothing to estimate from"
        )
    return estimate
