"""Response bodies of the operators' desk routes (inventory/api/desk.py): the release
day of a hospital, its bookings as the front desk looks them up, a suspension's preview,
a no-show, and the bans in force. Pydantic models that are their contract, as
inventory/api/views.py has them for the other routes."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue

from inventory.api.models import _BOOKING_EXAMPLE, BookingView, Instant, Session
from inventory.api.release_views import _RELEASE, ReleaseView
from inventory.api.views import ScheduleStatus, View, examples_config

_COUNTS = "remaining + held + booked + waiting == capacity (Redis's counts now)"

_DAY_SLOT: dict[str, JsonValue] = {
    "slot_id": "slot-0800-1",
    "starts_at": "2026-12-09T08:00:00+08:00",
    "ends_at": "2026-12-09T08:30:00+08:00",
    "capacity": 10,
    "remaining": 3,
    "held": 2,
    "booked": 5,
    "waiting": 0,
}
_DAY_SCHEDULE: dict[str, JsonValue] = {
    "schedule_id": "sch-20261209-am",
    "department_id": "dep-cardio",
    "department_name": "心内科",
    "doctor_id": "doc-li",
    "doctor_name": "李明",
    "doctor_title": "主任医师",
    "session": "morning",
    "starts_at": "2026-12-09T08:00:00+08:00",
    "ends_at": "2026-12-09T12:00:00+08:00",
    "release_at": "2026-12-02T08:00:00+08:00",
    "released": True,
    "status": "open",
    "fee_fen": 5000,
    "location": "门诊楼2层",
    "capacity": 10,
    "remaining": 3,
    "held": 2,
    "booked": 5,
    "waiting": 0,
    "waitlisted": 4,
    "release_id": "dep-cardio.20261209.am",
    "slots": [_DAY_SLOT],
}


class DaySlot(View):
    """A slot (time window) of the day and its units now."""

    slot_id: str
    starts_at: Instant
    ends_at: Instant
    capacity: int
    remaining: int
    held: int
    booked: int
    waiting: Annotated[int, Field(description="freed units waiting out the anti-scalping delay")]


class DaySchedule(View):
    """A schedule of the day with its units now (the sum of its slots')."""

    schedule_id: str
    department_id: str
    department_name: str
    doctor_id: str
    doctor_name: str
    doctor_title: str
    session: Session
    starts_at: Instant
    ends_at: Instant
    release_at: Instant
    released: bool
    status: ScheduleStatus
    fee_fen: int
    location: str
    capacity: Annotated[int, Field(description=_COUNTS)]
    remaining: int
    held: int
    booked: int
    waiting: int
    waitlisted: Annotated[int, Field(description="patients on its 候补 waitlist now")]
    release_id: Annotated[
        str | None, Field(description="its queued release's waiting room, if one was opened")
    ]
    slots: list[DaySlot]


class HospitalDay(View):
    """A hospital's schedules of a visit date, every department's, with their units now,
    and the waiting rooms of their queued releases."""

    model_config = examples_config(
        {
            "hospital_id": "h-demo",
            "date": "2026-12-09",
            "generated_at": "2026-12-02T08:00:03+08:00",
            "items": [_DAY_SCHEDULE],
            "releases": [_RELEASE],
        }
    )

    hospital_id: str
    date: date
    generated_at: Annotated[Instant, Field(description="when these counts were read")]
    items: list[DaySchedule]
    releases: list[ReleaseView]


PaymentStatus = Literal["pending", "paid", "closed", "failed"]
RefundStatus = Literal["pending", "succeeded", "failed"]


class DeskPayment(View):
    """The booking's payment (the paid one when there were several)."""

    payment_id: str
    status: PaymentStatus
    amount_fen: int
    paid_at: Instant | None


class DeskRefund(View):
    """The booking's refund."""

    refund_id: str
    status: RefundStatus
    amount_fen: int
    reason: str
    requested_at: Instant
    succeeded_at: Instant | None


class DeskHis(View):
    """Where the booking stands with the hospital information system."""

    appointment_id: Annotated[str | None, Field(description="the HIS's Appointment id")]
    attempts: int
    last_error: str
    submitted_at: Instant | None
    confirmed_at: Instant | None
    cancelled_at: Annotated[
        Instant | None, Field(description="when its cancellation reached the HIS")
    ]


class DeskVisit(View):
    """The visit: checked in (签到) or a no-show (爽约)."""

    checked_in_at: Instant | None
    checked_in_by: Literal["his", "staff", "kiosk"] | None
    no_show_at: Instant | None


_DESK_BOOKING: dict[str, JsonValue] = {
    **_BOOKING_EXAMPLE,
    "patient_name": "张*",
    "patient_phone": "138****5678",
    "payment": {
        "payment_id": "pay-0a1b2c3d4e5f",
        "status": "paid",
        "amount_fen": 5000,
        "paid_at": "2026-12-02T08:03:10+08:00",
    },
    "refund": None,
    "his": {
        "appointment_id": "appt-88231",
        "attempts": 1,
        "last_error": "",
        "submitted_at": "2026-12-02T08:03:13+08:00",
        "confirmed_at": "2026-12-02T08:03:14+08:00",
        "cancelled_at": None,
    },
    "visit": {"checked_in_at": None, "checked_in_by": None, "no_show_at": None},
}


class DeskBooking(BookingView):
    """A booking as the operators' desk sees it: the patient masked, its payment, refund,
    HIS state and visit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_DESK_BOOKING]})

    patient_name: Annotated[str, Field(description="masked: 张*")]
    patient_phone: Annotated[str, Field(description="masked: 138****5678")]
    payment: DeskPayment | None
    refund: DeskRefund | None
    his: DeskHis
    visit: DeskVisit


class DeskBookingList(View):
    model_config = examples_config({"items": [_DESK_BOOKING], "truncated": False})

    items: list[DeskBooking]
    truncated: Annotated[bool, Field(description="more matched than the limit")]


class SuspensionPreview(View):
    """What suspending (停诊) a schedule would do now: the open bookings it would cancel
    (each refunded when paid), the unpaid holds it would release, and the bookings left
    alone while another doctor is offered to them (替诊)."""

    model_config = examples_config(
        {
            "schedule_id": "sch-20261209-am",
            "status": "open",
            "bookings": [_DESK_BOOKING],
            "holds": 2,
            "kept": 0,
            "refunds_fen": 5000,
        }
    )

    schedule_id: str
    status: ScheduleStatus
    bookings: Annotated[list[DeskBooking], Field(description="cancelled, refunded when paid")]
    holds: Annotated[int, Field(description="unpaid holds released")]
    kept: Annotated[int, Field(description="bookings with a live substitute offer, left")]
    refunds_fen: Annotated[int, Field(description="the fees the cancellations refund")]


class NoShowAnswer(View):
    """A booking marked a no-show (爽约); the no-show rule looks at it next."""

    model_config = examples_config(
        {
            "booking_id": "d-cardio.20261209.abcdefghijklmnopqrstuvwx",
            "status": "no_show",
            "no_show_at": "2026-12-09T12:40:00+08:00",
        }
    )

    booking_id: str
    status: Literal["no_show"]
    no_show_at: Instant


class HospitalBan(View):
    """A patient banned at the hospital (or at every hospital, ``*``) now."""

    patient_id: str
    hospital_id: str
    patient_name: Annotated[str, Field(description="masked")]
    patient_phone: Annotated[str, Field(description="masked")]
    banned_until: Instant
    reason: str
    decided_at: Instant
    decided_by: str | None
    no_shows: list[str]


class HospitalBanList(View):
    model_config = examples_config(
        {
            "hospital_id": "h-1",
            "items": [
                {
                    "patient_id": "p-1",
                    "hospital_id": "h-1",
                    "patient_name": "张*",
                    "patient_phone": "138****5678",
                    "banned_until": "2027-03-10T12:30:00+08:00",
                    "reason": "no_show_rule",
                    "decided_at": "2026-12-09T12:30:00+08:00",
                    "decided_by": "no_show_rule",
                    "no_shows": ["d-cardio.20261202.abcdefghijklmnopqrstuvwx"],
                }
            ],
        }
    )

    hospital_id: str
    items: list[HospitalBan]
