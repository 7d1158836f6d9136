"""Capacity planning for a clinic session from queueing theory.

``mms`` gives the exact M/M/s figures (Erlang C), ``planning`` answers the inverse
questions (how many doctors, how many patients, how many slots), ``simulation`` checks the
formulas and models booked slots, no-shows and lateness, and ``estimate`` derives the
rates from booking records. See docs/capacity.md.
"""

from __future__ import annotations

from inventory.capacity.errors import (
    CapacityError,
    InsufficientDataError,
    InvalidInputError,
    TargetUnreachableError,
    UnstableSystemError,
)
from inventory.capacity.estimate import (
    BookingRecord,
    BookingStatus,
    DepartmentEstimate,
    estimate_departments,
    mms_for_department,
)
from inventory.capacity.intervals import Estimate
from inventory.capacity.mms import MMsResult, erlang_b, erlang_c, mms_metrics
from inventory.capacity.planning import (
    max_arrival_rate_for_wait,
    min_servers_for_wait,
    slots_per_session,
)
from inventory.capacity.simulation import (
    SessionScenario,
    SimulationResult,
    simulate_mms,
    simulate_session,
)

__all__ = [
    "BookingRecord",
    "BookingStatus",
    "CapacityError",
    "DepartmentEstimate",
    "Estimate",
    "InsufficientDataError",
    "InvalidInputError",
    "MMsResult",
    "SessionScenario",
    "SimulationResult",
    "TargetUnreachableError",
    "UnstableSystemError",
    "erlang_b",
    "erlang_c",
    "estimate_departments",
    "max_arrival_rate_for_wait",
    "min_servers_for_wait",
    "mms_for_department",
    "mms_metrics",
    "simulate_mms",
    "simulate_session",
    "slots_per_session",
]
