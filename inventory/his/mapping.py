"""From untrusted FHIR JSON to our types: validate with the fhir.resources R4B models,
then map, refusing anything the flows could not act on safely.

Why R4B: fhir.resources (v7 and later) ships R5 (default), R4B (4.3.0) and STU3, but no
R4 (4.0.1). R4B is R4's technical correction: Organization, Practitioner,
PractitionerRole, Location, Schedule, Slot, Appointment, Bundle and OperationOutcome
have the same elements in both, so an R4 server's JSON validates against R4B unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.location import Location
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.practitionerrole import PractitionerRole
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot
from pydantic import ValidationError

from inventory.his.errors import HisProtocolError
from inventory.his.fhir import CURRENCY, REFUSAL_SYSTEM, SESSIONS, FhirSystems, money_to_fen
from inventory.his.types import (
    HisAppointment,
    HisDepartment,
    HisDoctor,
    HisLocation,
    HisRefusal,
    HisSchedule,
    HisSlot,
)

R = TypeVar("R", bound=Resource)


def validate(data: Any, expected: type[R]) -> R:
    """``data`` as a validated resource of type ``expected``, or HisProtocolError."""
    if not isinstance(data, dict):
        raise HisProtocolError("the HIS answered JSON that is not a resource")
    kind = data.get("resourceType")
    if kind != expected.get_resource_type():
        raise HisProtocolError(f"expected {expected.get_resource_type()}, got {kind!r}")
    try:
        return expected.model_validate(data)
    except ValidationError as exc:
        raise HisProtocolError(f"invalid {kind}: {_first_error(exc)}") from exc


def validate_any(data: Any) -> Resource:
    """``data`` as whatever validated resource its ``resourceType`` names."""
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise HisProtocolError("the HIS answered JSON that is not a resource")
    try:
        model = get_fhir_model_class(data["resourceType"])
    except KeyError as exc:
        raise HisProtocolError(f"unknown resourceType {data['resourceType']!r}") from exc
    try:
        resource = model.model_validate(data)
    except ValidationError as exc:
        raise HisProtocolError(f"invalid {data['resourceType']}: {_first_error(exc)}") from exc
    if not isinstance(resource, Resource):
        raise HisProtocolError(f"{data['resourceType']} is not a resource")
    return resource


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "validation failed"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}"[:300]


def refusal_of(outcome: OperationOutcome | None) -> HisRefusal | None:
    """The refusal code in an OperationOutcome's issues, if it carries one we know."""
    if outcome is None:
        return None
    for issue in outcome.issue or ():
        details = issue.details
        for coding in (details.coding or ()) if details is not None else ():
            if coding.system == REFUSAL_SYSTEM and coding.code is not None:
                try:
                    return HisRefusal(coding.code)
                except ValueError:
                    return HisRefusal.OTHER
    return None


def diagnostics_of(outcome: OperationOutcome | None) -> str | None:
    """The first issue's diagnostics (or details text), for error messages."""
    if outcome is None:
        return None
    for issue in outcome.issue or ():
        if issue.diagnostics:
            return str(issue.diagnostics)[:300]
        if issue.details is not None and issue.details.text:
            return str(issue.details.text)[:300]
    return None


# --------------------------------------------------------------------------------------
# small readers
# --------------------------------------------------------------------------------------


def ref_id(reference: Reference | None, kind: str) -> str | None:
    """The logical id in ``kind/<id>`` (relative or absolute, with or without
    ``_history``), or None when the reference names another type."""
    if reference is None or not reference.reference:
        return None
    parts = str(reference.reference).split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == kind and parts[-1]:
        return parts[-1]
    return None


def _extensions(items: Iterable[Extension] | None) -> dict[str, Extension]:
    return {str(e.url): e for e in items or ()}


def _instant(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise HisProtocolError(f"{what} is not an instant with a time zone: {value!r}")
    return value


def _optional_instant(value: object, what: str) -> datetime | None:
    return None if value is None else _instant(value, what)


def _required(value: str | None, what: str) -> str:
    if not value:
        raise HisProtocolError(f"{what} is missing")
    return str(value)


def _count(extension: Extension | None, what: str) -> int | None:
    if extension is None:
        return None
    value = extension.valueUnsignedInt
    if value is None:
        value = extension.valueInteger
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise HisProtocolError(f"{what} is not a non-negative integer")
    return value


# --------------------------------------------------------------------------------------
# resources -> types
# --------------------------------------------------------------------------------------


def to_slot(slot: Slot, systems: FhirSystems) -> HisSlot:
    """A Slot. Capacity and booked come from our extensions; a Slot without them is
    one unit, booked unless free (plain FHIR semantics)."""
    schedule_id = ref_id(slot.schedule, "Schedule")
    if schedule_id is None:
        raise HisProtocolError("Slot.schedule does not name a Schedule")
    extensions = _extensions(slot.extension)
    capacity = _count(extensions.get(systems.slot_capacity), "slot capacity")
    booked = _count(extensions.get(systems.slot_booked), "slot booked count")
    status = _required(slot.status, "Slot.status")
    if capacity is None:
        capacity = 1
    if booked is None:
        booked = 0 if status == "free" else capacity
    starts_at = _instant(slot.start, "Slot.start")
    ends_at = _instant(slot.end, "Slot.end")
    if ends_at <= starts_at:
        raise HisProtocolError("Slot ends before it starts")
    return HisSlot(
        slot_id=_required(slot.id, "Slot.id"),
        schedule_id=schedule_id,
        starts_at=starts_at,
        ends_at=ends_at,
        capacity=capacity,
        booked=booked,
        status=status,
    )


def to_schedule(
    schedule: Schedule,
    systems: FhirSystems,
    *,
    roles: Mapping[str, PractitionerRole],
    locations: Mapping[str, Location],
    slots: Iterable[HisSlot] = (),
) -> HisSchedule:
    """A Schedule with its actors (PractitionerRole + Location) and slots."""
    schedule_id = _required(schedule.id, "Schedule.id")
    role_id = location_id = None
    location_name = ""
    for actor in schedule.actor or ():
        role_id = role_id or ref_id(actor, "PractitionerRole")
        found = ref_id(actor, "Location")
        if found is not None and location_id is None:
            location_id, location_name = found, str(actor.display or "")
    if role_id is None or location_id is None:
        raise HisProtocolError(f"Schedule {schedule_id} lacks a PractitionerRole or Location")
    horizon = schedule.planningHorizon
    if horizon is None:
        raise HisProtocolError(f"Schedule {schedule_id} has no planningHorizon")
    starts_at = _instant(horizon.start, "Schedule.planningHorizon.start")
    ends_at = _instant(horizon.end, "Schedule.planningHorizon.end")
    extensions = _extensions(schedule.extension)
    session_ext = extensions.get(systems.schedule_session)
    session = str(session_ext.valueCode) if session_ext and session_ext.valueCode else ""
    if session not in SESSIONS:
        raise HisProtocolError(f"Schedule {schedule_id} has no known session: {session!r}")
    fee_fen = 0
    fee = extensions.get(systems.schedule_fee)
    if fee is not None:
        money = fee.valueMoney
        if money is None or money.value is None or (money.currency or CURRENCY) != CURRENCY:
            raise HisProtocolError(f"Schedule {schedule_id} fee is not an amount in CNY")
        try:
            fee_fen = money_to_fen(Decimal(str(money.value)))
        except ValueError as exc:
            raise HisProtocolError(str(exc)) from exc
        if fee_fen < 0:
            raise HisProtocolError(f"Schedule {schedule_id} fee is negative")
    release = extensions.get(systems.schedule_release_time)
    deadline = extensions.get(systems.schedule_cancel_deadline)
    reason = extensions.get(systems.schedule_status_reason)
    role = roles.get(role_id)
    location = locations.get(location_id)
    if location is not None and location.name:
        location_name = str(location.name)
    own_slots = tuple(sorted((s for s in slots), key=lambda s: (s.starts_at, s.slot_id)))
    if any(s.schedule_id != schedule_id for s in own_slots):
        raise HisProtocolError(f"a slot of another schedule was given to {schedule_id}")
    return HisSchedule(
        schedule_id=schedule_id,
        role_id=role_id,
        doctor_id=ref_id(role.practitioner, "Practitioner") if role else None,
        department_id=ref_id(role.organization, "Organization") if role else None,
        location_id=location_id,
        location_name=location_name,
        visit_date=starts_at.date(),
        session=session,
        starts_at=starts_at,
        ends_at=ends_at,
        release_at=_optional_instant(release.valueDateTime if release else None, "release"),
        cancel_deadline=_optional_instant(
            deadline.valueDateTime if deadline else None, "cancel deadline"
        ),
        fee_fen=fee_fen,
        active=schedule.active is not False,
        status_reason=str(reason.valueString) if reason and reason.valueString else None,
        version=_version(schedule),
        slots=own_slots,
    )


def to_appointment(appointment: Appointment, systems: FhirSystems) -> HisAppointment:
    """An Appointment: our booking id or the other channel's id, the appointment number
    (就诊序号), the visit time and the place."""
    booking_id = external_id = number = None
    channel = "platform"
    for identifier in appointment.identifier or ():
        system, value = str(identifier.system or ""), identifier.value
        if value is None:
            continue
        if system == systems.booking:
            booking_id = str(value)
        elif system == systems.appointment_number:
            number = str(value)
        elif system.startswith(systems.channel_prefix + "/"):
            external_id = str(value)
            channel = system.rsplit("/", 1)[1]
    channel_ext = _extensions(appointment.extension).get(systems.appointment_channel)
    if channel_ext is not None and channel_ext.valueCode:
        channel = str(channel_ext.valueCode)
    location_id = location_name = role_id = None
    for participant in appointment.participant or ():
        actor = participant.actor
        found = ref_id(actor, "Location")
        if found is not None and location_id is None and actor is not None:
            location_id = found
            location_name = str(actor.display) if actor.display else None
        role_id = role_id or ref_id(actor, "PractitionerRole")
    slot_id = None
    for reference in appointment.slot or ():
        slot_id = slot_id or ref_id(reference, "Slot")
    reason = appointment.cancelationReason
    consultation = _extensions(appointment.extension).get(systems.consultation_period)
    period = consultation.valuePeriod if consultation is not None else None
    return HisAppointment(
        appointment_id=_required(appointment.id, "Appointment.id"),
        status=_required(appointment.status, "Appointment.status"),
        channel=channel,
        booking_id=booking_id,
        external_id=external_id,
        number=number,
        slot_id=slot_id,
        visit_start=_optional_instant(appointment.start, "Appointment.start"),
        visit_end=_optional_instant(appointment.end, "Appointment.end"),
        location_id=location_id,
        location_name=location_name,
        role_id=role_id,
        created=_created(appointment.created),
        cancel_reason=str(reason.text) if reason is not None and reason.text else None,
        version=_version(appointment),
        consultation_start=_optional_instant(
            period.start if period is not None else None, "consultation start"
        ),
        consultation_end=_optional_instant(
            period.end if period is not None else None, "consultation end"
        ),
    )


def _created(value: object) -> datetime | None:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return None  # a bare date or a partial dateTime says too little to use


def _version(resource: Schedule | Appointment) -> str | None:
    meta = resource.meta
    return str(meta.versionId) if meta is not None and meta.versionId else None


def to_department(organization: Organization) -> HisDepartment | None:
    """A department (an Organization with partOf), or None for the hospital itself."""
    parent = ref_id(organization.partOf, "Organization")
    if parent is None:
        return None
    return HisDepartment(
        department_id=_required(organization.id, "Organization.id"),
        hospital_id=parent,
        name=str(organization.name or ""),
    )


def to_doctor(
    role: PractitionerRole, practitioners: Mapping[str, Practitioner], systems: FhirSystems
) -> HisDoctor:
    """A doctor from their PractitionerRole and (included) Practitioner."""
    role_id = _required(role.id, "PractitionerRole.id")
    doctor_id = ref_id(role.practitioner, "Practitioner")
    department_id = ref_id(role.organization, "Organization")
    if doctor_id is None or department_id is None:
        raise HisProtocolError(f"PractitionerRole {role_id} lacks practitioner or organization")
    practitioner = practitioners.get(doctor_id)
    name = str(role.practitioner.display or "") if role.practitioner else ""
    title = title_code = ""
    if practitioner is not None:
        for human in practitioner.name or ():
            name = str(human.text or "") or "".join(
                [str(human.family or ""), *(str(g) for g in human.given or ())]
            )
            break
        for qualification in practitioner.qualification or ():
            for coding in qualification.code.coding or ():
                if coding.system == systems.professional_title:
                    title_code = str(coding.code or "")
                    title = str(coding.display or qualification.code.text or title_code)
    specialty = "；".join(str(concept.text) for concept in role.specialty or () if concept.text)
    return HisDoctor(
        doctor_id=doctor_id,
        role_id=role_id,
        department_id=department_id,
        name=name,
        title=title,
        title_code=title_code,
        specialty=specialty,
    )


def to_location(location: Location) -> HisLocation:
    """A Location (its managing department, when given)."""
    address = location.address
    return HisLocation(
        location_id=_required(location.id, "Location.id"),
        name=str(location.name or ""),
        department_id=ref_id(location.managingOrganization, "Organization"),
        address=str(address.text) if address is not None and address.text else "",
    )


def bundle_resources(bundle: Bundle) -> list[tuple[Resource, str]]:
    """The resources of a searchset Bundle with their search mode (match, include)."""
    if bundle.type != "searchset":
        raise HisProtocolError(f"expected a searchset Bundle, got {bundle.type!r}")
    found: list[tuple[Resource, str]] = []
    for entry in bundle.entry or ():
        if entry.resource is None:
            continue
        mode = entry.search.mode if entry.search is not None and entry.search.mode else "match"
        found.append((entry.resource, str(mode)))
    return found


def visit_day(value: date | datetime) -> str:
    """A date as FHIR search wants it."""
    return (value.date() if isinstance(value, datetime) else value).isoformat()
