"""Response bodies of the API that handlers build as plain dicts (catalogue, patients,
operators, health): pydantic models that are their contract. ``inventory.api.openapi``
renders their JSON Schemas; the models forbid unknown fields, so a field a handler adds
without adding it here fails the contract tests (tests/api/test_openapi.py validates
real answers, schemathesis every generated one).

Every instant is written in the hospital's time zone with its offset.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from inventory.api.models import (
    _CANCEL_DEADLINE,
    _CANCELLABLE,
    PATIENT_EXAMPLE,
    HospitalPolicyBody,
    Instant,
    PatientView,
    Session,
)


class View(BaseModel):
    """A response body: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


def examples_config(*examples: dict[str, JsonValue]) -> ConfigDict:
    """A view's model config with its examples (the document shows them; a test checks
    the view accepts each)."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


ScheduleStatus = Literal["open", "suspended"]


class Health(View):
    model_config = examples_config({"status": "ok"})

    status: Literal["ok"]


class Readiness(View):
    """Each check is ``ok`` or says what is failing."""

    model_config = examples_config(
        {
            "status": "not_ready",
            "checks": {
                "redis": "ok",
                "postgres": "ok",
                "store": "ok",
                "outbox": "lagging: 73000 entries waiting, oldest 41 s (bound 50000)",
            },
        }
    )

    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class HospitalItem(View):
    hospital_id: str
    name: str
    timezone: Annotated[str, Field(description="IANA time zone; answers' instants use it")]


class HospitalList(View):
    model_config = examples_config(
        {"items": [{"hospital_id": "h-demo", "name": "示例医院", "timezone": "Asia/Shanghai"}]}
    )

    items: list[HospitalItem]


class DepartmentNode(View):
    department_id: str
    name: str
    children: list[DepartmentNode]


class DepartmentTree(View):
    model_config = examples_config(
        {
            "hospital_id": "h-demo",
            "departments": [
                {
                    "department_id": "dep-internal",
                    "name": "内科",
                    "children": [{"department_id": "dep-cardio", "name": "心内科", "children": []}],
                }
            ],
        }
    )

    hospital_id: str
    departments: list[DepartmentNode]


class DoctorItem(View):
    doctor_id: str
    name: str
    title: Annotated[str, Field(description="职称, e.g. 主任医师")]
    specialty: Annotated[str, Field(description="擅长")]


_DOCTOR: dict[str, JsonValue] = {
    "doctor_id": "doc-li",
    "name": "李明",
    "title": "主任医师",
    "specialty": "心律失常",
}


class DoctorList(View):
    model_config = examples_config({"items": [_DOCTOR]})

    items: list[DoctorItem]


_SCHEDULE: dict[str, JsonValue] = {
    "schedule_id": "sch-20261209-am",
    "doctor": _DOCTOR,
    "visit_date": "2026-12-09",
    "session": "morning",
    "starts_at": "2026-12-09T08:00:00+08:00",
    "ends_at": "2026-12-09T12:00:00+08:00",
    "fee_fen": 5000,
    "location": "门诊楼2层",
    "status": "open",
    "capacity": 30,
    "remaining": 12,
    "release_at": "2026-12-02T08:00:00+08:00",
    "released": True,
    "countdown_s": 0,
    "cancel_deadline": "2026-12-08T20:00:00+08:00",
    "cancellable": True,
    "waiting_room": None,
}


class WaitingRoomRef(View):
    """The waiting room of a queued release (放号排队): patients join it from
    ``opens_at`` with POST /v1/releases/{release_id}/tickets and are admitted in drawn
    order from ``t0``; a reserve without an admission token is refused."""

    model_config = examples_config(
        {
            "release_id": "rel-6f1c2a9d0b7e4c31",
            "opens_at": "2026-12-02T07:30:00+08:00",
            "t0": "2026-12-02T08:00:00+08:00",
        }
    )

    release_id: str
    opens_at: Instant
    t0: Instant


_ROOM_NOTE = "the schedule's queued release, when it has one"


class ScheduleItem(View):
    """A schedule (排班) of a day with what is left of it."""

    model_config = examples_config(_SCHEDULE)

    schedule_id: str
    doctor: DoctorItem
    visit_date: date
    session: Session
    starts_at: Instant
    ends_at: Instant
    fee_fen: Annotated[int, Field(description="the registration fee in fen")]
    location: str
    status: ScheduleStatus
    capacity: int
    remaining: int
    release_at: Annotated[Instant, Field(description="when its slots are released (放号)")]
    released: bool
    countdown_s: Annotated[int, Field(description="seconds until release; 0 once released")]
    cancel_deadline: Annotated[Instant, Field(description=_CANCEL_DEADLINE)]
    cancellable: Annotated[bool, Field(description=_CANCELLABLE)]
    waiting_room: Annotated[WaitingRoomRef | None, Field(description=_ROOM_NOTE)]


class ScheduleDay(View):
    model_config = examples_config(
        {"department_id": "dep-cardio", "date": "2026-12-09", "items": [_SCHEDULE]}
    )

    department_id: str
    date: date
    items: list[ScheduleItem]


class SlotItem(View):
    """A time window of a schedule with what is left of it."""

    slot_id: str
    starts_at: Instant
    ends_at: Instant
    capacity: int
    remaining: int
    cancel_deadline: Annotated[Instant, Field(description=_CANCEL_DEADLINE)]
    cancellable: Annotated[bool, Field(description=_CANCELLABLE)]


_AVAILABILITY: dict[str, JsonValue] = {
    "schedule_id": "sch-20261209-am",
    "status": "open",
    "release_at": "2026-12-02T08:00:00+08:00",
    "cancel_deadline": "2026-12-08T20:00:00+08:00",
    "cancellable": True,
    "waiting_room": None,
    "items": [
        {
            "slot_id": "slot-0800-1",
            "starts_at": "2026-12-09T08:00:00+08:00",
            "ends_at": "2026-12-09T08:30:00+08:00",
            "capacity": 4,
            "remaining": 1,
            "cancel_deadline": "2026-12-08T20:00:00+08:00",
            "cancellable": True,
        }
    ],
}


class Availability(View):
    """A schedule's slots with remaining counts."""

    model_config = examples_config(_AVAILABILITY)

    schedule_id: str
    status: ScheduleStatus
    release_at: Instant
    cancel_deadline: Annotated[Instant, Field(description=_CANCEL_DEADLINE)]
    cancellable: Annotated[bool, Field(description=_CANCELLABLE)]
    waiting_room: Annotated[WaitingRoomRef | None, Field(description=_ROOM_NOTE)]
    items: list[SlotItem]


class PatientList(View):
    model_config = examples_config({"items": [PATIENT_EXAMPLE]})

    items: list[PatientView]


class HospitalAnswer(View):
    model_config = examples_config(
        {
            "hospital_id": "h-demo",
            "name": "示例医院",
            "timezone": "Asia/Shanghai",
            "policy": HospitalPolicyBody().model_dump(),
        }
    )

    hospital_id: str
    name: str
    timezone: str
    policy: HospitalPolicyBody


class DepartmentAnswer(View):
    model_config = examples_config(
        {
            "department_id": "dep-cardio",
            "hospital_id": "h-demo",
            "parent_id": "dep-internal",
            "name": "心内科",
        }
    )

    department_id: str
    hospital_id: str
    parent_id: str | None
    name: str


class DoctorAnswer(DoctorItem):
    model_config = examples_config(_DOCTOR)


class ScheduleStatusAnswer(View):
    model_config = examples_config({"schedule_id": "sch-20261209-am", "status": "suspended"})

    schedule_id: str
    status: ScheduleStatus


class VisitAnswer(View):
    """A booking checked in (签到)."""

    model_config = examples_config(
        {
            "booking_id": "d-cardio.20261209.abcdefghijklmnopqrstuvwx",
            "status": "visited",
            "checked_in_at": "2026-12-09T08:12:00+08:00",
            "checked_in_by": "kiosk",
        }
    )

    booking_id: str
    status: Literal["visited"]
    checked_in_at: str
    checked_in_by: Literal["his", "staff", "kiosk"]


class BanLiftAnswer(View):
    """Whether a ban was in force and is lifted now."""

    model_config = examples_config({"patient_id": "p-1", "hospital_id": "h-1", "lifted": True})

    patient_id: str
    hospital_id: str
    lifted: bool


class BanEntry(View):
    """One decision of the ban's history: a ban (with its end) or a lift."""

    hospital_id: str
    action: Literal["banned", "lifted"]
    banned_until: str | None
    reason: str
    decided_by: str
    no_shows: list[str]
    at: str


class CurrentBan(View):
    hospital_id: str
    banned_until: str


class PatientBans(View):
    """A patient's bans in force and every decision and lift, newest first."""

    model_config = examples_config(
        {
            "patient_id": "p-1",
            "bans": [{"hospital_id": "h-1", "banned_until": "2027-03-10T12:30:00+08:00"}],
            "history": [
                {
                    "hospital_id": "h-1",
                    "action": "banned",
                    "banned_until": "2027-03-10T12:30:00+08:00",
                    "reason": "no_show_rule",
                    "decided_by": "no_show_rule",
                    "no_shows": [
                        "d-cardio.20261202.abcdefghijklmnopqrstuvwx",
                        "d-cardio.20261209.bcdefghijklmnopqrstuvwxy",
                    ],
                    "at": "2026-12-09T12:30:00+08:00",
                }
            ],
        }
    )

    patient_id: str
    bans: list[CurrentBan]
    history: list[BanEntry]


class Envelope(View):
    """The original brief's envelope: ``code`` 0 on success."""

    code: Literal[0]
    message: Literal["ok"]


class LegacySchedules(Envelope):
    model_config = examples_config({"code": 0, "message": "ok", "data": [_SCHEDULE]})

    data: list[ScheduleItem]


class LegacyAvailability(Envelope):
    model_config = examples_config({"code": 0, "message": "ok", "data": _AVAILABILITY})

    data: Availability


class LegacyError(View):
    """A legacy failure: ``code`` is the HTTP status times 100, ``error`` the stable code."""

    model_config = examples_config(
        {"code": 40400, "message": "未找到", "error": "not_found", "data": None}
    )

    code: int
    message: str
    error: str
    data: None
    errors: list[dict[str, str]] | None = None


# -- the operators' capacity model (rates per hour; a figure too large to compute is null)

_FIGURES: dict[str, JsonValue] = {
    "arrival_rate": 20.0,
    "service_rate": 6.0,
    "servers": 4,
    "utilization": 0.8333,
    "p_wait": 0.5875,
    "wq_hours": 0.0979,
    "w_hours": 0.2646,
    "lq": 1.958,
    "l": 5.2913,
}


class MmsFigures(View):
    """The M/M/s figures of a clinic session: utilisation, the chance a patient waits,
    mean waits in hours (queue, total) and mean numbers waiting (queue, total)."""

    model_config = examples_config(_FIGURES)

    arrival_rate: float | None
    service_rate: float | None
    servers: int
    utilization: float | None
    p_wait: float | None
    wq_hours: float | None
    w_hours: float | None
    lq: float | None
    l: float | None  # noqa: E741  # the queueing literature's name


class MinServersAnswer(View):
    model_config = examples_config({"servers": 4, "max_wait_minutes": 10.0, "figures": _FIGURES})

    servers: int
    max_wait_minutes: float
    figures: MmsFigures


class MaxRateAnswer(View):
    model_config = examples_config(
        {
            "max_arrival_rate": 21.4,
            "servers": 4,
            "service_rate": 6.0,
            "max_wait_minutes": 10.0,
            "session_hours": 4.0,
            "patients_per_session": 85,
        }
    )

    max_arrival_rate: float | None
    servers: int
    service_rate: float | None
    max_wait_minutes: float | None
    session_hours: float | None = None
    patients_per_session: int | None


class DepartmentEstimateView(View):
    """Rates estimated from a department's bookings, with the counts behind them."""

    department_id: str
    sessions: int
    observed_hours: float
    attended: int
    no_shows: int
    cancelled: int
    pending: int
    service_samples: int
    service_discarded: int
    booked_rate_per_hour: float | None
    no_show_rate: float | None
    service_rate_per_hour: float | None
    mean_service_minutes: float | None
    effective_arrival_rate_per_hour: float | None


class DepartmentCapacityAnswer(View):
    model_config = examples_config(
        {
            "department_id": "dep-cardio",
            "from": "2026-11-01",
            "to": "2026-11-30",
            "estimate": {
                "department_id": "dep-cardio",
                "sessions": 40,
                "observed_hours": 160.0,
                "attended": 2900,
                "no_shows": 300,
                "cancelled": 120,
                "pending": 0,
                "service_samples": 0,
                "service_discarded": 2900,
                "booked_rate_per_hour": 20.0,
                "no_show_rate": 0.09375,
                "service_rate_per_hour": None,
                "mean_service_minutes": None,
                "effective_arrival_rate_per_hour": 18.125,
            },
            "service_rate_source": "query",
            "figures": _FIGURES,
        }
    )

    department_id: str
    from_: Annotated[date, Field(alias="from")]
    to: date
    estimate: DepartmentEstimateView
    service_rate_source: Literal["query", "bookings"]
    figures: MmsFigures
