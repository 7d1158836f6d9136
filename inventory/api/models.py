"""Request and response bodies of the booking API (pydantic models).

They are the OpenAPI contract: ``inventory.api.openapi`` renders their JSON Schemas.
Requests refuse unknown fields, so a client cannot set ``state``, ``amount`` or an
account (no mass assignment). Ids are strings.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue

# The patient's value types belong to the domain (the patient record reads them too);
# they are part of this contract all the same, so they are named from here as well.
from inventory.domain import Gender, Relation

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["slot-0800-1"])]

#: Free text shown to people (names, titles, places): no control characters, which
#: Postgres refuses (NUL) and which have no business in a name anyway.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


Printable = Annotated[str, Field(pattern=_PRINTABLE)]


_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _day_text(value: object) -> object:
    # pydantic alone reads a query string's "0" as 1970-01-01 (a Unix time).
    if isinstance(value, str) and not _DAY_RE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


#: A calendar date in a query string: ``YYYY-MM-DD`` only.
Day = Annotated[
    date,
    BeforeValidator(_day_text),
    Field(examples=["2026-12-01"], json_schema_extra={"pattern": f"^{_DAY_RE.pattern}$"}),
]


HoldId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_-]{1,64}\.[0-9]{8}\.[a-z2-7]{24}$"),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Channel(StrEnum):
    """Where the patient books from."""

    WECHAT = "wechat"
    ALIPAY = "alipay"
    APP = "app"
    WEB = "web"


class Session(StrEnum):
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"


#: An admission token of a queued release's waiting room (40 hex digits).
AdmissionToken = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]


class HoldCreate(Request):
    slot_id: Id
    patient_id: Id
    channel: Channel
    #: Needed on a queued release's slots: the token its waiting room admitted with.
    admission_token: AdmissionToken | None = None


class HoldConfirm(Request):
    payment_ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class BookingCancel(Request):
    reason: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")] = "patient_cancelled"


#: An instant as answers write it: in the hospital's time zone, with its offset.
Instant = Annotated[
    datetime,
    Field(
        description="RFC 3339, in the hospital's time zone with its offset",
        examples=["2026-12-09T08:00:00+08:00"],
    ),
]


class HoldState(StrEnum):
    """Where a hold is in its life (``booked``: paid, a booking)."""

    HELD = "held"
    BOOKED = "booked"
    RELEASED = "released"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class BookingStatus(StrEnum):
    """Where a booking is: ``confirmed`` (paid, durable), ``submitted`` (sent to the
    HIS), ``his_confirmed`` (the HIS numbered it), ``rejected`` (the HIS refused it; the
    fee is refunded), ``cancelled``, ``visited``, ``no_show``."""

    CONFIRMED = "confirmed"
    SUBMITTED = "submitted"
    HIS_CONFIRMED = "his_confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    VISITED = "visited"
    NO_SHOW = "no_show"


_CANCELLABLE = (
    "whether a patient can cancel now: the booking (or the booking this hold becomes "
    "when paid) is still open and the cancellation deadline has not passed"
)
_CANCEL_DEADLINE = (
    "until when a booking can be cancelled: the hospital's deadline, never after the session starts"
)
_HOLD_EXAMPLE: dict[str, JsonValue] = {
    "hold_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
    "slot_id": "slot-0800-1",
    "schedule_id": "sch-20261209-am",
    "patient_id": "p-7f3a9c",
    "channel": "wechat",
    "state": "held",
    "amount_fen": 5000,
    "created_at": "2026-12-02T08:00:01.250000+08:00",
    "deadline": "2026-12-02T08:15:01.250000+08:00",
    "extended": False,
    "cancel_deadline": "2026-12-08T20:00:00+08:00",
    "cancellable": True,
}


class HoldView(BaseModel):
    """A hold: one unit of a slot taken for a patient until ``deadline``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_HOLD_EXAMPLE]})

    hold_id: str
    slot_id: str
    schedule_id: str
    patient_id: str
    channel: Channel
    state: HoldState
    amount_fen: Annotated[int, Field(description="the fee in fen")]
    created_at: Instant
    deadline: Annotated[Instant, Field(description="pay before this, or the hold ends")]
    extended: bool
    cancel_deadline: Annotated[Instant, Field(description=_CANCEL_DEADLINE)]
    cancellable: Annotated[bool, Field(description=_CANCELLABLE)]


_BOOKING_EXAMPLE: dict[str, JsonValue] = {
    "booking_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
    "hold_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
    "slot_id": "slot-0800-1",
    "schedule_id": "sch-20261209-am",
    "patient_id": "p-7f3a9c",
    "status": "his_confirmed",
    "amount_fen": 5000,
    "payment_ref": "wx-4200001234",
    "confirmed_at": "2026-12-02T08:03:12.480000+08:00",
    "cancelled_at": None,
    "cancel_reason": "",
    "his_appointment_no": "A0012",
    "visit_time": "2026-12-09T08:00:00+08:00",
    "place": "门诊楼2层 心内科3诊室",
    "visit_date": "2026-12-09",
    "session": "morning",
    "location": "门诊楼2层",
    "slot_starts_at": "2026-12-09T08:00:00+08:00",
    "slot_ends_at": "2026-12-09T08:30:00+08:00",
    "doctor_id": "doc-li",
    "doctor_name": "李明",
    "doctor_title": "主任医师",
    "department_id": "dep-cardio",
    "department_name": "心内科",
    "hospital_id": "h-demo",
    "hospital_name": "示例医院",
    "cancel_deadline": "2026-12-08T20:00:00+08:00",
    "cancellable": True,
}


class BookingView(BaseModel):
    """A booking with where and when the visit is (every answer that returns a booking
    returns this whole view: GET, confirm, cancel)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_BOOKING_EXAMPLE]})

    booking_id: Annotated[str, Field(description="the hold's id: a booking keeps it")]
    hold_id: str
    slot_id: str
    schedule_id: str
    patient_id: str
    status: BookingStatus
    amount_fen: Annotated[int, Field(description="the fee paid, in fen")]
    payment_ref: str
    confirmed_at: Instant
    cancelled_at: Instant | None
    cancel_reason: str
    his_appointment_no: Annotated[
        str | None, Field(description="the hospital's appointment number, once it has one")
    ]
    visit_time: Annotated[Instant | None, Field(description="when to come, from the HIS")]
    place: Annotated[str | None, Field(description="where to go, from the HIS")]
    visit_date: date
    session: Session
    location: str
    slot_starts_at: Instant
    slot_ends_at: Instant
    doctor_id: str
    doctor_name: str
    doctor_title: str
    department_id: str
    department_name: str
    hospital_id: str
    hospital_name: str
    cancel_deadline: Annotated[Instant, Field(description=_CANCEL_DEADLINE)]
    cancellable: Annotated[bool, Field(description=_CANCELLABLE)]


class BookingReschedule(Request):
    """Where a booking moves to (改约): another slot of the same hospital, before the
    booking's cancellation deadline. ``method``: how a dearer window's fee difference is
    to be paid (jsapi needs the openid when the payment is started)."""

    slot_id: Id
    method: Literal["jsapi", "native"] = "jsapi"


class RescheduleView(BaseModel):
    """A booking moved (改约): the new booking, and what happened to the old one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "reschedule_id": "dep-cardio.20261210.bcdefghijklmnopqrstuvwxy",
                    "from_booking_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
                    "refund_fen": 0,
                    "booking": {
                        **_BOOKING_EXAMPLE,
                        "booking_id": "dep-cardio.20261210.bcdefghijklmnopqrstuvwxy",
                        "hold_id": "dep-cardio.20261210.bcdefghijklmnopqrstuvwxy",
                        "status": "confirmed",
                        "his_appointment_no": None,
                        "visit_time": None,
                        "place": None,
                        "visit_date": "2026-12-10",
                        "slot_starts_at": "2026-12-10T08:00:00+08:00",
                        "slot_ends_at": "2026-12-10T08:30:00+08:00",
                        "cancel_deadline": "2026-12-09T20:00:00+08:00",
                    },
                }
            ]
        },
    )

    reschedule_id: Annotated[str, Field(description="the new booking's id")]
    from_booking_id: Annotated[str, Field(description="the booking moved (now cancelled)")]
    refund_fen: Annotated[
        int, Field(description="the fee difference refunded from the payment, in fen")
    ]
    status: Annotated[
        Literal["done", "awaiting_payment"],
        Field(description="awaiting_payment: a dearer window, its difference to be paid"),
    ] = "done"
    charge_fen: Annotated[
        int, Field(description="the fee difference charged (a dearer window), in fen")
    ] = 0
    payment_id: Annotated[
        str | None,
        Field(
            description="the difference's payment while awaiting it: start it at "
            "POST /v1/holds/{reschedule_id}/payments"
        ),
    ] = None
    pay_by: Annotated[Instant | None, Field(description="the difference's payment deadline")] = None
    booking: Annotated[
        BookingView | None, Field(description="the new booking (null while awaiting payment)")
    ]


class SubstitutionAnswer(Request):
    """A patient's answer to a substitute doctor's offer (替诊). ``method``: how a dearer
    substitute's fee difference is to be paid."""

    accept: bool
    method: Literal["jsapi", "native"] = "jsapi"


class SubstitutionOfferView(BaseModel):
    """The substitute doctor's schedule offered to a booking of a suspended schedule."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "booking_id": "dep-cardio.20261209.abcdefghijklmnopqrstuvwx",
                    "schedule_id": "sch-20261209-am",
                    "target_schedule_id": "sch-20261209-am-wang",
                    "status": "offered",
                    "respond_by": "2026-12-08T20:00:00+00:00",
                    "new_booking_id": None,
                }
            ]
        },
    )

    booking_id: str
    schedule_id: Annotated[str, Field(description="the suspended schedule")]
    target_schedule_id: Annotated[str, Field(description="the substitute doctor's schedule")]
    status: Literal["offered", "accepting", "accepted", "declined"]
    respond_by: Annotated[str, Field(description="answer before this instant")]
    new_booking_id: str | None


class SubstitutionResult(BaseModel):
    """The booking after the answer: the new one (accepted) or the cancelled one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"accepted": False, "booking": {**_BOOKING_EXAMPLE,
                          "status": "cancelled", "cancel_reason": "suspended",
                          "cancelled_at": "2026-12-08T09:00:00+08:00",
                          "cancellable": False}, "refund_fen": 0}]
        },
    )  # fmt: skip

    accepted: bool
    booking: Annotated[
        BookingView | None,
        Field(description="null while a dearer substitute's difference awaits payment"),
    ]
    refund_fen: Annotated[int, Field(description="a cheaper substitute's difference, in fen")]
    status: Annotated[
        Literal["done", "awaiting_payment"],
        Field(description="awaiting_payment: a dearer substitute, its difference to be paid"),
    ] = "done"
    charge_fen: Annotated[int, Field(description="a dearer substitute's difference, in fen")] = 0
    reschedule_id: Annotated[
        str | None, Field(description="the new booking's id (its hold's, while awaiting payment)")
    ] = None
    payment_id: Annotated[
        str | None,
        Field(
            description="the difference's payment while awaiting it: start it at "
            "POST /v1/holds/{reschedule_id}/payments"
        ),
    ] = None
    pay_by: Annotated[Instant | None, Field(description="the difference's payment deadline")] = None


class HoldList(BaseModel):
    """The account's holds still waiting for payment, newest first."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [_HOLD_EXAMPLE]}]}
    )

    items: list[HoldView]


class BookingList(BaseModel):
    """The account's bookings, newest first."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [_BOOKING_EXAMPLE]}]}
    )

    items: list[BookingView]


class PatientCreate(Request):
    """A real-name patient. ``resident_id`` is the 18-character resident ID number
    (GB 11643 check digit; full-width digits and a lowercase x are accepted);
    ``birth_date`` and ``gender`` must agree with it; ``phone`` is a mainland mobile."""

    name: Annotated[Printable, Field(min_length=1, max_length=50)]
    gender: Gender
    birth_date: date
    phone: Annotated[str, Field(min_length=11, max_length=20)]
    resident_id: Annotated[
        str,
        Field(min_length=18, max_length=24, json_schema_extra={"format": "cn-resident-id"}),
    ]
    relation: Relation = Relation.SELF


PATIENT_EXAMPLE: dict[str, JsonValue] = {
    "patient_id": "p7f3a9c0e12d4b5a6c7d8e9f0",
    "name": "张*",
    "gender": "male",
    "birth_date": "1990-03-07",
    "phone": "138****5678",
    "resident_id": "1101**********002X",
    "relation": "self",
}


class PatientView(BaseModel):
    """A patient as an account sees it: personal data masked. ``phone`` is the number
    on record (the first registration's): another account linking the same person does
    not change it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PATIENT_EXAMPLE]})

    patient_id: str
    name: str
    gender: Gender
    birth_date: date
    phone: str
    resident_id: str
    relation: Relation


class HospitalPolicyBody(Request):
    """A hospital's booking rules (see README, "Configuration (per hospital policy)")."""

    hold_ttl_s: Annotated[int, Field(ge=60, le=7200)] = 900
    max_hold_s: Annotated[int, Field(ge=60, le=14400, description="at least hold_ttl_s")] = 1800
    extend_s: Annotated[int, Field(ge=0, le=7200)] = 600
    one_per_day: bool = True
    max_open_per_patient: Annotated[int, Field(ge=0, le=100)] = 0
    max_in_7_days_per_patient: Annotated[int, Field(ge=0, le=100)] = 0
    blacklist: bool = False
    rerelease_min_s: Annotated[int, Field(ge=0, le=86400)] = 0
    rerelease_max_s: Annotated[
        int, Field(ge=0, le=86400, description="at least rerelease_min_s")
    ] = 0
    token_window_s: Annotated[int, Field(ge=1, le=600)] = 10
    room_window_s: Annotated[int, Field(ge=0, le=86400)] = 1800
    room_factor: Annotated[float, Field(ge=1.0, le=10.0)] = 1.2
    room_token_s: Annotated[int, Field(ge=5, le=3600)] = 60
    no_show_grace_s: Annotated[int, Field(ge=0, le=7 * 86400)] = 1800
    no_show_ban_count: Annotated[int, Field(ge=0, le=100)] = 0
    no_show_window_days: Annotated[int, Field(ge=1, le=3650)] = 90
    no_show_ban_days: Annotated[int, Field(ge=1, le=3650)] = 90
    max_reschedules: Annotated[int, Field(ge=0, le=10)] = 1
    charge_fee_difference: bool = True
    waitlist_offer_s: Annotated[int, Field(ge=60, le=86400)] = 1800
    waitlist_max_per_patient: Annotated[int, Field(ge=0, le=100)] = 3


Name = Annotated[Printable, Field(min_length=1, max_length=100)]


class HospitalPut(Request):
    name: Name
    timezone: Annotated[Printable, Field(min_length=1, max_length=64)] = "Asia/Shanghai"
    policy: HospitalPolicyBody = HospitalPolicyBody()


class DepartmentPut(Request):
    hospital_id: Id
    parent_id: Id | None = None
    name: Name
    sort_order: Annotated[int, Field(ge=0, le=1_000_000)] = 0


class DoctorPut(Request):
    hospital_id: Id
    department_id: Id
    name: Name
    title: Annotated[Printable, Field(max_length=50)] = ""
    specialty: Annotated[Printable, Field(max_length=500)] = ""


class SlotPut(Request):
    slot_id: Id
    starts_at: datetime
    ends_at: Annotated[datetime, Field(description="after starts_at")]
    capacity: Annotated[int, Field(ge=0, le=10_000)]


class SchedulePut(Request):
    """A schedule (排班) with its slots. Instants need a time zone."""

    hospital_id: Id
    department_id: Id
    doctor_id: Id
    visit_date: date
    session: Session
    starts_at: datetime
    ends_at: Annotated[datetime, Field(description="after starts_at")]
    release_at: Annotated[datetime, Field(description="not after starts_at")]
    cancel_deadline: Annotated[datetime, Field(description="not after ends_at")]
    fee_fen: Annotated[int, Field(ge=0, le=10_000_000)]
    location: Annotated[Printable, Field(max_length=200)] = ""
    slots: Annotated[list[SlotPut], Field(min_length=1, max_length=200)]


class CapacityPut(Request):
    capacity: Annotated[int, Field(ge=0, le=10_000)]


class StatusChange(Request):
    reason: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]


class SubstituteOffer(Request):
    """替诊: the substitute doctor's schedule offered to a schedule's bookings."""

    target_schedule_id: Id
    respond_within_s: Annotated[int, Field(ge=60, le=7 * 86400)] = 3600
    reason: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")] = "doctor_unavailable"


class SubstitutionOffered(BaseModel):
    """The offers made (one per booking still open), the schedule now suspended."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "schedule_id": "sch-20261209-am",
                    "target_schedule_id": "sch-20261209-am-wang",
                    "respond_by": "2026-12-08T20:00:00+00:00",
                    "booking_ids": ["dep-cardio.20261209.abcdefghijklmnopqrstuvwx"],
                }
            ]
        },
    )

    schedule_id: str
    target_schedule_id: str
    respond_by: str
    booking_ids: list[str]


class CheckIn(Request):
    """Who checks the patient in: a check-in kiosk (自助机) or the front desk."""

    source: Literal["kiosk", "staff"] = "staff"


class BanLift(Request):
    """Why an operator lifts a ban (kept in the ban's history)."""

    reason: Annotated[Printable, Field(min_length=1, max_length=200)]


# -- the waitlist --------------------------------------------------------------------------


class WaitlistJoinBody(Request):
    """Which of the account's patients joins, and from where."""

    patient_id: Id
    channel: Channel


class WaitlistEntryState(StrEnum):
    """Where an entry is: ``waiting`` in line; ``offered``: a freed unit is held for the
    patient (pay the offer's hold before its deadline); then ``taken`` (paid),
    ``lapsed`` (unpaid by the deadline), ``declined`` (the offer given back),
    ``refused`` (a booking rule for the patient refused the offer) or ``left``."""

    WAITING = "waiting"
    OFFERED = "offered"
    TAKEN = "taken"
    LAPSED = "lapsed"
    DECLINED = "declined"
    REFUSED = "refused"
    LEFT = "left"


class WaitlistOfferView(BaseModel):
    """The unit held for the patient: an ordinary hold of the account's."""

    model_config = ConfigDict(extra="forbid")

    hold_id: str
    slot_id: str
    state: Annotated[str, Field(description="the hold's state (held, booked, expired, ...)")]
    amount_fen: Annotated[int, Field(description="the fee in fen")]
    offered_at: Instant
    deadline: Annotated[Instant, Field(description="pay before this, or it passes on")]


_ENTRY_EXAMPLE: dict[str, JsonValue] = {
    "entry_id": "dep-cardio.20261209.qrstuvwxyzabcdefghijklmn",
    "schedule_id": "sch-20261209-am",
    "patient_id": "p-7f3a9c",
    "channel": "wechat",
    "state": "waiting",
    "position": 3,
    "joined_at": "2026-12-02T08:00:05.120000+08:00",
    "offer": None,
    "ended_at": None,
    "end_reason": "",
}


class WaitlistEntryView(BaseModel):
    """A patient's place on a schedule's waitlist."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_ENTRY_EXAMPLE]})

    entry_id: str
    schedule_id: str
    patient_id: str
    channel: Channel
    state: WaitlistEntryState
    position: Annotated[
        int | None,
        Field(description="while waiting: 1 = the next freed unit is offered to this entry"),
    ]
    joined_at: Instant
    offer: WaitlistOfferView | None
    ended_at: Instant | None
    end_reason: str
    doctor_id: Annotated[
        str | None,
        Field(
            description="a doctor's-day entry's doctor (any window of the day); null for"
            " one schedule's"
        ),
    ] = None
    day_schedule_ids: Annotated[
        list[str] | None,
        Field(
            description="a doctor's-day entry's schedules, each of whose freed units may be"
            " offered to it; schedule_id is the first until offered, then the offered one's"
        ),
    ] = None


class WaitlistList(BaseModel):
    """The account's waitlist entries, newest first."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [_ENTRY_EXAMPLE]}]}
    )

    items: list[WaitlistEntryView]
