"""What the HIS tells us, as typed values (no FHIR, no I/O): the catalogue, schedules
with their slots, and appointments. Instants are timezone-aware; money is integer fen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class HisRefusal(StrEnum):
    """Why the HIS refused a change (the code in its OperationOutcome)."""

    FULL = "full"  #: the slot has no free unit
    SUSPENDED = "suspended"  #: the schedule is suspended (停诊)
    PAST = "past"  #: the session has started or is over
    NOT_FOUND = "not-found"  #: no such slot or appointment
    INVALID = "invalid"  #: the HIS found the request malformed
    CONFLICT = "conflict"  #: e.g. several appointments carry our identifier
    OTHER = "other"  #: a refusal without a reason we know


@dataclass(frozen=True, slots=True)
class HisDepartment:
    """A department (an Organization that is part of the hospital)."""

    department_id: str
    hospital_id: str
    name: str


@dataclass(frozen=True, slots=True)
class HisDoctor:
    """A doctor: Practitioner plus their PractitionerRole in one department."""

    doctor_id: str  #: the Practitioner id
    role_id: str  #: the PractitionerRole id (what schedules name)
    department_id: str
    name: str
    title: str  #: 职称 as the HIS displays it, e.g. 主任医师
    title_code: str
    specialty: str  #: 擅长, free text


@dataclass(frozen=True, slots=True)
class HisLocation:
    """A place patients go to (a clinic room or area)."""

    location_id: str
    name: str
    department_id: str | None
    address: str


@dataclass(frozen=True, slots=True)
class HisCatalogue:
    """The hospital, its departments, doctors and locations."""

    hospital_id: str
    hospital_name: str
    departments: tuple[HisDepartment, ...]
    doctors: tuple[HisDoctor, ...]
    locations: tuple[HisLocation, ...]


@dataclass(frozen=True, slots=True)
class HisSlot:
    """One time window of a schedule. ``booked`` counts every channel's appointments."""

    slot_id: str
    schedule_id: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    booked: int
    status: str  #: FHIR Slot.status: free, busy, busy-unavailable, ...

    @property
    def free(self) -> int:
        """Units the HIS would still accept (never negative)."""
        return max(0, self.capacity - self.booked)


@dataclass(frozen=True, slots=True)
class HisSchedule:
    """A schedule (排班): one doctor, one date, one session, with its slots."""

    schedule_id: str
    role_id: str
    doctor_id: str | None  #: from the PractitionerRole, when the HIS sent it
    department_id: str | None  #: from the PractitionerRole, when the HIS sent it
    location_id: str
    location_name: str
    visit_date: date
    session: str  #: morning, afternoon or evening
    starts_at: datetime
    ends_at: datetime
    release_at: datetime | None
    cancel_deadline: datetime | None
    fee_fen: int
    active: bool  #: False when suspended (停诊)
    status_reason: str | None
    version: str | None
    slots: tuple[HisSlot, ...] = field(default_factory=tuple)

    @property
    def status(self) -> str:
        """Our vocabulary: ``open`` or ``suspended``."""
        return "open" if self.active else "suspended"


@dataclass(frozen=True, slots=True)
class HisPatient:
    """Who an appointment is for, as much as the HIS needs to register the visit."""

    name: str
    resident_id: str | None = None

    def __repr__(self) -> str:  # personal data stays out of logs and tracebacks
        return "HisPatient(<masked>)"


@dataclass(frozen=True, slots=True)
class HisAppointment:
    """An appointment as the HIS holds it."""

    appointment_id: str  #: the HIS's logical id
    status: str  #: FHIR Appointment.status: booked, cancelled, ...
    channel: str  #: platform (us), window, phone
    booking_id: str | None  #: our booking id when we made it
    external_id: str | None  #: another channel's own identifier
    number: str | None  #: 就诊序号, the appointment number
    slot_id: str | None
    visit_start: datetime | None
    visit_end: datetime | None
    location_id: str | None
    location_name: str | None  #: the place the patient goes to
    role_id: str | None
    created: datetime | None
    cancel_reason: str | None
    version: str | None
    #: When the consultation ran, when the HIS says (its Encounter's period).
    consultation_start: datetime | None = None
    consultation_end: datetime | None = None

    @property
    def active(self) -> bool:
        """Still taking a unit of its slot."""
        return self.status not in ("cancelled", "entered-in-error", "noshow")

    @property
    def visit_outcome(self) -> str | None:
        """What the HIS says of the visit in our words: ``visited`` (the patient checked
        in: arrived, checked-in or fulfilled), ``no_show``, or None (not yet known)."""
        return VISIT_OUTCOMES.get(self.status)


#: FHIR Appointment.status -> the booking status it settles.
VISIT_OUTCOMES = {
    "arrived": "visited",
    "checked-in": "visited",
    "fulfilled": "visited",
    "noshow": "no_show",
}
