"""Visits read back from the HIS: an Appointment the hospital marked ``arrived``
(签到/取号), ``fulfilled`` (with the consultation's period when it gives one) or
``noshow`` settles our booking as ``visited`` or ``no_show``
(:mod:`inventory.visits.outcomes`). The schedule sync reads yesterday's and today's
appointments every round; the reconciler reports and fixes the same differences over
its window (kind ``visit_outcome``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from inventory.his.client import HisClient
from inventory.his.types import HisAppointment
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.visits.outcomes import consultation_period, record_no_show, record_visit

#: Booking statuses the HIS's word on a visit may still change.
_SETTLEABLE = frozenset({"confirmed", "submitted", "his_confirmed"})


@dataclass
class VisitReadBack:
    """What one read-back recorded (booking ids)."""

    visited: list[str] = field(default_factory=list)
    no_shows: list[str] = field(default_factory=list)
    consultations: list[str] = field(default_factory=list)


def differs(appointment: HisAppointment, row: Mapping[str, Any]) -> bool:
    """Whether the HIS says something of the visit our booking does not record yet."""
    outcome = appointment.visit_outcome
    status = row["status"]
    if outcome == "visited":
        if status in _SETTLEABLE or status == "no_show":
            return True
        start, end = consultation_period(
            appointment.consultation_start, appointment.consultation_end
        )
        return status == "visited" and (
            (start is not None and row["consultation_started_at"] is None)
            or (end is not None and row["consultation_ended_at"] is None)
        )
    return outcome == "no_show" and status in _SETTLEABLE


async def apply_visit(pool: Any, appointment: HisAppointment) -> str | None:
    """Record what the HIS says of the visit of our booking: ``visited``, ``no_show``,
    or None when nothing changed."""
    booking_id = appointment.booking_id
    if booking_id is None:
        return None
    if appointment.visit_outcome == "visited":
        start = appointment.consultation_start
        recorded = await record_visit(
            pool,
            booking_id,
            source="his",
            at=start,
            consultation=(start, appointment.consultation_end),
        )
        return "visited" if recorded is not None else None
    if appointment.visit_outcome == "no_show":
        return "no_show" if await record_no_show(pool, booking_id, source="his") else None
    return None


async def read_back_visits(
    his: HisClient, pool: Any, days: Iterable[date], *, acquire_timeout_s: float = 10.0
) -> VisitReadBack:
    """Read the HIS's appointments of ``days`` and record every visit outcome of our
    bookings that we do not have yet."""
    found: list[HisAppointment] = []
    for day in days:
        found += [
            a
            for a in await his.search_appointments(visit_date=day)
            if a.channel == "platform" and a.booking_id and a.visit_outcome is not None
        ]
    result = VisitReadBack()
    if not found:
        return result
    async with acquire(pool, timeout_s=acquire_timeout_s) as connection:
        rows = await connection.fetch(QUERIES["list_visit_bookings"], [a.booking_id for a in found])
    ours = {row["booking_id"]: row for row in rows}
    for appointment in found:
        row = ours.get(appointment.booking_id or "")
        if row is None or not differs(appointment, row):
            continue
        was = row["status"]
        outcome = await apply_visit(pool, appointment)
        if outcome == "visited" and was == "visited":
            result.consultations.append(row["booking_id"])
        elif outcome == "visited":
            result.visited.append(row["booking_id"])
        elif outcome == "no_show":
            result.no_shows.append(row["booking_id"])
    return result
