"""A hospital's report over a range of visit dates: per department and for the whole
hospital, how releases filled and sold out, how much of the capacity was used, how
bookings were cancelled and when, how many patients did not come, and the M/M/s figures
of each department when its consultation lengths are recorded.

Pure functions of the rows inventory/record/reports.py reads, so the figures are tested
against a seeded history with known answers. Definitions (docs/platform.md):

* ``utilisation``: bookings that stand (not cancelled, not refused by the HIS) over the
  capacity;
* ``filled_first_hour``: units held or booked one hour after each schedule's release,
  over the capacity;
* ``sold_out_share``: schedules that sold out (at some instant every unit was held or
  booked) over the schedules with capacity; ``sell_out_s``: median and 90th percentile
  of the seconds from release to that instant;
* ``cancellation_rate``: cancelled over cancelled plus standing bookings, with the
  cancellations' lead time before the session (``cancellation_leads``);
* ``no_show_rate``: no-shows over no-shows plus visits (bookings whose visit is settled);
* ``waitlist_conversion``: waitlist entries that became bookings (their offer paid) over
  the entries that joined; ``waitlist_offer_take_rate``: over the entries offered a unit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import numpy

from inventory.capacity.errors import CapacityError
from inventory.capacity.mms import mms_metrics
from inventory.capacity.records import estimate_department

#: Cancellation lead-time buckets: (name, the shortest lead in seconds it takes).
LEAD_BUCKETS: Final = (
    ("over_3d", 3 * 86400.0),
    ("1d_to_3d", 86400.0),
    ("2h_to_24h", 2 * 3600.0),
    ("under_2h", 0.0),
    ("after_start", -math.inf),
)


@dataclass(frozen=True)
class Figures:
    """The figures of one department, or of the whole hospital."""

    schedules: int
    capacity: int
    booked: int
    cancelled: int
    rejected: int
    visited: int
    no_show: int
    taken_first_hour: int
    schedules_with_capacity: int
    sold_out: int
    sell_out_s: tuple[float, ...]
    cancellation_leads: dict[str, int]
    waitlist_joined: int = 0
    waitlist_offered: int = 0
    waitlist_taken: int = 0
    waitlist_lapsed: int = 0

    @property
    def utilisation(self) -> float | None:
        return _ratio(self.booked, self.capacity)

    @property
    def filled_first_hour(self) -> float | None:
        return _ratio(self.taken_first_hour, self.capacity)

    @property
    def sold_out_share(self) -> float | None:
        return _ratio(self.sold_out, self.schedules_with_capacity)

    @property
    def cancellation_rate(self) -> float | None:
        return _ratio(self.cancelled, self.cancelled + self.booked)

    @property
    def no_show_rate(self) -> float | None:
        return _ratio(self.no_show, self.no_show + self.visited)

    @property
    def waitlist_conversion(self) -> float | None:
        return _ratio(self.waitlist_taken, self.waitlist_joined)

    @property
    def waitlist_offer_take_rate(self) -> float | None:
        return _ratio(self.waitlist_taken, self.waitlist_offered)

    @property
    def median_sell_out_s(self) -> float | None:
        return statistics.median(self.sell_out_s) if self.sell_out_s else None

    @property
    def p90_sell_out_s(self) -> float | None:
        return _quantile(self.sell_out_s, 0.9)

    def as_dict(self) -> dict[str, Any]:
        """The figures as a report's JSON shows them."""
        return {
            "schedules": self.schedules,
            "capacity": self.capacity,
            "booked": self.booked,
            "utilisation": self.utilisation,
            "filled_first_hour": self.filled_first_hour,
            "sold_out": self.sold_out,
            "sold_out_share": self.sold_out_share,
            "median_sell_out_s": self.median_sell_out_s,
            "p90_sell_out_s": self.p90_sell_out_s,
            "cancelled": self.cancelled,
            "cancellation_rate": self.cancellation_rate,
            "cancellation_leads": dict(self.cancellation_leads),
            "rejected": self.rejected,
            "visited": self.visited,
            "no_show": self.no_show,
            "no_show_rate": self.no_show_rate,
            "waitlist_joined": self.waitlist_joined,
            "waitlist_offered": self.waitlist_offered,
            "waitlist_taken": self.waitlist_taken,
            "waitlist_lapsed": self.waitlist_lapsed,
            "waitlist_conversion": self.waitlist_conversion,
            "waitlist_offer_take_rate": self.waitlist_offer_take_rate,
        }


@dataclass(frozen=True)
class DepartmentReport:
    department_id: str
    name: str
    figures: Figures
    #: M/M/s figures from recorded consultation lengths, or why there are none.
    queue: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HospitalReport:
    hospital_id: str
    first: date
    last: date
    departments: tuple[DepartmentReport, ...]
    total: Figures

    def as_dict(self) -> dict[str, Any]:
        return {
            "hospital_id": self.hospital_id,
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "total": self.total.as_dict(),
            "departments": [
                {
                    "department_id": d.department_id,
                    "name": d.name,
                    **d.figures.as_dict(),
                    "queue": d.queue,
                }
                for d in self.departments
            ],
        }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by linear interpolation between closest ranks (numpy's default)."""
    return float(numpy.quantile(values, q)) if values else None


def lead_bucket(lead_s: float) -> str:
    """The bucket of a cancellation made ``lead_s`` seconds before its session started."""
    for name, shortest in LEAD_BUCKETS:
        if lead_s >= shortest:
            return name
    raise AssertionError("the last bucket takes every lead")  # pragma: no cover


def figures_of(schedules: Iterable[Mapping[str, Any]], leads: Iterable[float]) -> Figures:
    """The figures of a set of schedule outcome rows and their cancellations' leads."""
    rows = list(schedules)
    buckets = {name: 0 for name, _ in LEAD_BUCKETS}
    for lead in leads:
        buckets[lead_bucket(lead)] += 1
    sell_out = tuple(
        max(0.0, (row["sold_out_at"] - row["release_at"]).total_seconds())
        for row in rows
        if row["sold_out_at"] is not None
    )
    return Figures(
        schedules=len(rows),
        capacity=sum(int(row["capacity"]) for row in rows),
        booked=sum(int(row["booked"]) for row in rows),
        cancelled=sum(int(row["cancelled"]) for row in rows),
        rejected=sum(int(row["rejected"]) for row in rows),
        visited=sum(int(row["visited"]) for row in rows),
        no_show=sum(int(row["no_show"]) for row in rows),
        taken_first_hour=sum(
            min(int(row["taken_first_hour"]), int(row["capacity"])) for row in rows
        ),
        schedules_with_capacity=sum(1 for row in rows if int(row["capacity"]) > 0),
        sold_out=len(sell_out),
        sell_out_s=sell_out,
        cancellation_leads=buckets,
        waitlist_joined=sum(int(row["waitlist_joined"]) for row in rows),
        waitlist_offered=sum(int(row["waitlist_offered"]) for row in rows),
        waitlist_taken=sum(int(row["waitlist_taken"]) for row in rows),
        waitlist_lapsed=sum(int(row["waitlist_lapsed"]) for row in rows),
    )


def servers_of(schedules: Iterable[Mapping[str, Any]]) -> int:
    """The doctors a department works with at once: its schedules per session (visit
    date and start), on average, rounded (at least 1)."""
    sessions: dict[tuple[Any, Any], int] = {}
    for row in schedules:
        key = (row["visit_date"], row["starts_at"])
        sessions[key] = sessions.get(key, 0) + 1
    if not sessions:
        return 1
    return max(1, round(sum(sessions.values()) / len(sessions)))


def queue_figures(
    department_id: str, bookings: Iterable[Mapping[str, Any]], servers: int
) -> dict[str, Any]:
    """The department's M/M/s figures (arrival and service rates estimated from its
    bookings; ``servers`` doctors), or ``{"unavailable": why}``."""
    try:
        estimate = estimate_department(department_id, bookings)
        arrival = estimate.effective_arrival_rate_per_hour
        service = estimate.service_rate_per_hour
        if arrival is None or arrival <= 0:
            return {"unavailable": "no attended booking in the period"}
        if service is None:
            return {"unavailable": "no consultation lengths are recorded"}
        result = mms_metrics(arrival, service, servers)
    except CapacityError as error:
        return {"unavailable": str(error)}
    return {
        "arrival_rate": result.arrival_rate,
        "service_rate": result.service_rate,
        "servers": result.servers,
        "utilization": result.utilization,
        "p_wait": result.p_wait,
        "wq_hours": result.wq_hours,
        "w_hours": result.w_hours,
    }
