"""A hospital's report, read from Postgres and computed (figures.py)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from inventory.record import reports as record
from inventory.reports.figures import (
    DepartmentReport,
    HospitalReport,
    figures_of,
    queue_figures,
    servers_of,
)


async def hospital_report(pool: Any, hospital_id: str, first: date, last: date) -> HospitalReport:
    """The report of ``hospital_id``'s schedules visited from ``first`` to ``last``."""
    schedules = await record.schedule_outcomes(pool, hospital_id, first, last)
    leads = await record.cancellation_leads(pool, hospital_id, first, last)
    by_department: dict[str, list[Any]] = defaultdict(list)
    for row in schedules:
        by_department[row["department_id"]].append(row)
    leads_of: dict[str, list[float]] = defaultdict(list)
    for row in leads:
        leads_of[row["department_id"]].append(float(row["lead_s"]))
    departments = []
    for department_id, rows in by_department.items():
        bookings = await record.booking_outcomes(pool, department_id, first, last)
        departments.append(
            DepartmentReport(
                department_id=department_id,
                name=rows[0]["department_name"],
                figures=figures_of(rows, leads_of[department_id]),
                queue=queue_figures(department_id, bookings, servers_of(rows)),
            )
        )
    return HospitalReport(
        hospital_id=hospital_id,
        first=first,
        last=last,
        departments=tuple(departments),
        total=figures_of(schedules, (float(row["lead_s"]) for row in leads)),
    )
