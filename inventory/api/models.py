"""Request and response bodies of the booking API (pydantic models).

They are the OpenAPI contract: ``inventory.api.openapi`` renders their JSON Schemas.
Requests refuse unknown fields, so a client cannot set ``state``, ``amount`` or an
account (no mass assignment). Ids are strings.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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


class HoldCreate(Request):
    slot_id: Id
    patient_id: Id
    channel: Channel


class HoldConfirm(Request):
    payment_ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class BookingCancel(Request):
    reason: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")] = "patient_cancelled"


class HoldView(BaseModel):
    hold_id: str
    slot_id: str
    schedule_id: str
    patient_id: str
    channel: str
    state: str
    amount_fen: int
    created_at: datetime
    deadline: datetime
    extended: bool


class BookingView(BaseModel):
    booking_id: str
    hold_id: str
    slot_id: str
    schedule_id: str
    patient_id: str
    status: str
    amount_fen: int
    payment_ref: str
    confirmed_at: datetime | None
    visit_date: date | None = None
    cancelled_at: datetime | None = None
    his_appointment_no: str | None = None


class Relation(StrEnum):
    """Who the patient is to the account holder (就诊人)."""

    SELF = "self"
    CHILD = "child"
    PARENT = "parent"
    SPOUSE = "spouse"
    OTHER = "other"


class Gender(StrEnum):
    MALE = "male"
    FEMALE = "female"


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


class PatientView(BaseModel):
    """A patient as an account sees it: personal data masked."""

    patient_id: str
    name: str
    gender: str
    birth_date: date
    phone: str
    resident_id: str
    relation: str


class HospitalPolicyBody(Request):
    """A hospital's booking rules (see README, "Configuration (per hospital policy)")."""

    hold_ttl_s: Annotated[int, Field(ge=60, le=7200)] = 900
    max_hold_s: Annotated[int, Field(ge=60, le=14400, description="at least hold_ttl_s")] = 1800
    extend_s: Annotated[int, Field(ge=0, le=7200)] = 600
    one_per_day: bool = True
    max_open_per_patient: Annotated[int, Field(ge=0, le=100)] = 0
    blacklist: bool = False
    rerelease_min_s: Annotated[int, Field(ge=0, le=86400)] = 0
    rerelease_max_s: Annotated[
        int, Field(ge=0, le=86400, description="at least rerelease_min_s")
    ] = 0
    token_window_s: Annotated[int, Field(ge=1, le=600)] = 10


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


class Session(StrEnum):
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"


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
