"""Operator routes: create and change the catalogue, slot capacity, suspend (停诊) and
reopen. Until the HIS sync exists this is how data gets in. Every route needs a token
with the operator role; a hospital operator's token reaches its hospitals' objects only
(another hospital's answer 404, as missing ones: :func:`operator_for`). Writes are PUTs
of the whole object, so a retry is harmless. Each call leaves an audit entry
(inventory/api/audit.py); the handlers note the object as it was before their change
for it."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from aiohttp import web

from inventory.api import views
from inventory.api.audit import note_before
from inventory.api.auth import operator_for
from inventory.api.bodies import json_response, read_json
from inventory.api.catalogue import path_id, schedule_availability
from inventory.api.context import SERVICES
from inventory.api.models import (
    CapacityPut,
    DepartmentPut,
    DoctorPut,
    HospitalPut,
    SchedulePut,
    StatusChange,
    SubstituteOffer,
    SubstitutionOffered,
)
from inventory.api.routing import Routes
from inventory.errors import ConflictError, NotFoundError, ValidationFailedError
from inventory.record.catalogue import policy_from_json

routes = Routes(tag="operator")


def _invalid(field: str, reason: str) -> ValidationFailedError:
    return ValidationFailedError(errors=[{"field": field, "reason": reason}])


@routes.put(
    "/v1/operator/hospitals/{hospital_id}",
    operation_id="put_hospital",
    summary="Create or replace a hospital",
    response=views.HospitalAnswer,
    auth="operator",
    body=HospitalPut,
    errors=(400, 401, 403, 404, 409, 422, 503),
    extra_ok=(201,),
    idempotency="recorded",
)
async def put_hospital(request: web.Request) -> web.Response:
    """Create or replace a hospital and its booking policy."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    catalogue = request.app[SERVICES].catalogue
    existing = await catalogue.hospital(hospital_id)
    note_before(request, None if existing is None else _hospital_view(existing))
    body = await read_json(request, HospitalPut)
    try:
        ZoneInfo(body.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid("timezone", "unknown IANA time zone") from None
    # The rules between two fields, named by the field to change (the policy parser
    # below would name the whole policy).
    if body.policy.max_hold_s < body.policy.hold_ttl_s:
        raise _invalid("policy.max_hold_s", "must be at least hold_ttl_s")
    if body.policy.rerelease_max_s < body.policy.rerelease_min_s:
        raise _invalid("policy.rerelease_max_s", "must be at least rerelease_min_s")
    policy = body.policy.model_dump()
    try:
        parsed = policy_from_json(policy)
    except ValueError as error:
        raise _invalid("policy", str(error)) from None
    row = await request.app[SERVICES].catalogue.put_hospital(
        hospital_id, body.name, body.timezone, policy
    )
    request.app[SERVICES].catalogue.policies[hospital_id] = parsed
    request.app[SERVICES].catalogue.hospital_changed(hospital_id, body.timezone)
    return json_response(_hospital_view(row), status=201 if row["inserted"] else 200)


def _hospital_view(row: asyncpg.Record) -> dict[str, object]:
    return {
        "hospital_id": row["id"],
        "name": row["name"],
        "timezone": row["timezone"],
        "policy": row["policy"],
    }


@routes.put(
    "/v1/operator/departments/{department_id}",
    operation_id="put_department",
    summary="Create or replace a department",
    response=views.DepartmentAnswer,
    auth="operator",
    body=DepartmentPut,
    errors=(400, 401, 403, 404, 409, 422, 503),
    extra_ok=(201,),
    idempotency="recorded",
)
async def put_department(request: web.Request) -> web.Response:
    """Create or replace a department (``parent_id`` makes it a sub-department)."""
    department_id = path_id(request, "department_id")
    catalogue = request.app[SERVICES].catalogue
    existing = await catalogue.department(department_id)
    # A hospital operator neither changes another hospital's department nor moves one
    # into another hospital.
    if existing is not None:
        operator_for(request, existing["hospital_id"])
    note_before(request, None if existing is None else _department_view(existing))
    body = await read_json(request, DepartmentPut)
    operator_for(request, body.hospital_id)
    row = await catalogue.put_department(
        department_id,
        hospital_id=body.hospital_id,
        parent_id=body.parent_id,
        name=body.name,
        sort_order=body.sort_order,
    )
    return json_response(_department_view(row), status=201 if row["inserted"] else 200)


def _department_view(row: asyncpg.Record) -> dict[str, object]:
    return {
        "department_id": row["id"],
        "hospital_id": row["hospital_id"],
        "parent_id": row["parent_id"],
        "name": row["name"],
    }


@routes.put(
    "/v1/operator/doctors/{doctor_id}",
    operation_id="put_doctor",
    summary="Create or replace a doctor",
    response=views.DoctorAnswer,
    auth="operator",
    body=DoctorPut,
    errors=(400, 401, 403, 404, 409, 422, 503),
    extra_ok=(201,),
    idempotency="recorded",
)
async def put_doctor(request: web.Request) -> web.Response:
    """Create or replace a doctor."""
    doctor_id = path_id(request, "doctor_id")
    catalogue = request.app[SERVICES].catalogue
    existing = await catalogue.doctor(doctor_id)
    if existing is not None:
        operator_for(request, existing["hospital_id"])
    note_before(request, None if existing is None else _doctor_view(existing))
    body = await read_json(request, DoctorPut)
    operator_for(request, body.hospital_id)
    row = await catalogue.put_doctor(
        doctor_id,
        hospital_id=body.hospital_id,
        department_id=body.department_id,
        name=body.name,
        title=body.title,
        specialty=body.specialty,
    )
    return json_response(_doctor_view(row), status=201 if row["inserted"] else 200)


def _doctor_view(row: asyncpg.Record) -> dict[str, object]:
    return {
        "doctor_id": row["id"],
        "name": row["name"],
        "title": row["title"],
        "specialty": row["specialty"],
    }


def _check_schedule(body: SchedulePut) -> None:
    instants = [body.starts_at, body.ends_at, body.release_at, body.cancel_deadline]
    instants += [s.starts_at for s in body.slots] + [s.ends_at for s in body.slots]
    if any(moment.tzinfo is None for moment in instants):
        raise _invalid("starts_at", "every instant needs a time zone offset")
    if not body.starts_at < body.ends_at:
        raise _invalid("ends_at", "must be after starts_at")
    if body.release_at > body.starts_at:
        raise _invalid("release_at", "must not be after starts_at")
    if body.cancel_deadline > body.ends_at:
        raise _invalid("cancel_deadline", "must not be after ends_at")
    seen: set[str] = set()
    for i, slot in enumerate(body.slots):
        if slot.slot_id in seen:
            raise _invalid(f"slots.{i}.slot_id", "appears twice")
        seen.add(slot.slot_id)
        if not slot.starts_at < slot.ends_at:
            raise _invalid(f"slots.{i}.ends_at", "must be after starts_at")


@routes.put(
    "/v1/operator/schedules/{schedule_id}",
    operation_id="put_schedule",
    summary="Create or replace a schedule and its slots",
    response=views.Availability,
    auth="operator",
    body=SchedulePut,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def put_schedule(request: web.Request) -> web.Response:
    """Create or replace a schedule and its slots, in Postgres and the inventory."""
    schedule_id = path_id(request, "schedule_id")
    services = request.app[SERVICES]
    existing = await services.catalogue.schedule(schedule_id)
    if existing is not None:
        operator_for(request, existing["hospital_id"])
        note_before(request, await schedule_availability(services, schedule_id))
    body = await read_json(request, SchedulePut)
    operator_for(request, body.hospital_id)
    _check_schedule(body)
    schedule = body.model_dump(exclude={"slots"}) | {"schedule_id": schedule_id}
    schedule["session"] = body.session.value
    slots = [slot.model_dump() for slot in body.slots]
    try:
        await services.catalogue.put_schedule(schedule, slots)
    except asyncpg.ForeignKeyViolationError as error:
        raise ConflictError("a referenced hospital, department or doctor does not exist") from (
            error
        )
    except asyncpg.IntegrityConstraintViolationError as error:
        raise ConflictError(
            "the change breaks a catalogue rule (a slot of another schedule, or a "
            "schedule moved to another department or date)"
        ) from error
    view = await schedule_availability(services, schedule_id)
    return json_response(view)


@routes.put(
    "/v1/operator/slots/{slot_id}/capacity",
    operation_id="put_capacity",
    summary="Set a slot's capacity (加号)",
    response=views.Availability,
    auth="operator",
    body=CapacityPut,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def put_capacity(request: web.Request) -> web.Response:
    """Set a slot's capacity (加号 raises it); never below what is held or booked."""
    slot_id = path_id(request, "slot_id")
    body = await read_json(request, CapacityPut)
    services = request.app[SERVICES]
    location = await services.catalogue.slot_location(slot_id)
    operator_for(request, None if location is None else location.hospital_id)
    if location is None:
        raise NotFoundError("no such slot")
    note_before(request, await schedule_availability(services, location.schedule_id))
    row = await services.catalogue.schedule(location.schedule_id)
    slots = await services.catalogue.schedule_slots(location.schedule_id)
    assert row is not None
    schedule = {
        "schedule_id": row["id"],
        "hospital_id": row["hospital_id"],
        "department_id": row["department_id"],
        "doctor_id": row["doctor_id"],
        "visit_date": row["visit_date"],
        "session": row["session"],
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
        "release_at": row["release_at"],
        "cancel_deadline": row["cancel_deadline"],
        "fee_fen": row["fee_fen"],
        "location": row["location"],
    }
    changed = [
        {
            "slot_id": s["id"],
            "starts_at": s["starts_at"],
            "ends_at": s["ends_at"],
            "capacity": body.capacity if s["id"] == slot_id else s["capacity"],
        }
        for s in slots
    ]
    await services.catalogue.put_schedule(schedule, changed)
    view = await schedule_availability(services, location.schedule_id)
    return json_response(view)


async def _set_status(request: web.Request, status: str) -> web.Response:
    schedule_id = path_id(request, "schedule_id")
    body = await read_json(request, StatusChange)
    services = request.app[SERVICES]
    existing = await services.catalogue.schedule(schedule_id)
    operator_for(request, None if existing is None else existing["hospital_id"])
    if existing is None:
        raise NotFoundError("no such schedule")
    note_before(request, {"schedule_id": schedule_id, "status": existing["status"]})
    if await services.catalogue.set_status(schedule_id, status, body.reason) is None:
        raise NotFoundError("no such schedule")
    return json_response({"schedule_id": schedule_id, "status": status})


@routes.post(
    "/v1/operator/schedules/{schedule_id}/suspend",
    operation_id="suspend_schedule",
    summary="Suspend a schedule (停诊)",
    response=views.ScheduleStatusAnswer,
    auth="operator",
    body=StatusChange,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def suspend_schedule(request: web.Request) -> web.Response:
    """Suspend a schedule (停诊): reserves and confirms are refused from now on; the
    worker then releases its holds and cancels its bookings past the cancellation
    deadline, each with its refund requested and the patient told ``reason``, and the
    HIS is told of every booking it holds."""
    return await _set_status(request, "suspended")


@routes.post(
    "/v1/operator/schedules/{schedule_id}/reopen",
    operation_id="reopen_schedule",
    summary="Reopen a suspended schedule",
    response=views.ScheduleStatusAnswer,
    auth="operator",
    body=StatusChange,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def reopen_schedule(request: web.Request) -> web.Response:
    """Reopen a suspended schedule."""
    return await _set_status(request, "open")


@routes.post(
    "/v1/operator/schedules/{schedule_id}/substitute",
    operation_id="offer_substitute",
    summary="Offer another doctor's schedule to a schedule's bookings, and suspend it (替诊)",
    response=SubstitutionOffered,
    auth="operator",
    body=SubstituteOffer,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def offer_substitute(request: web.Request) -> web.Response:
    """Offer ``target_schedule_id`` (another doctor's schedule of the same hospital) to
    every open booking of the schedule, then suspend it (停诊): each patient accepts (the
    booking moves, payment kept) or declines (refund) before ``respond_within_s``; an
    offer not answered by then is cancelled and refunded like any suspended booking."""
    schedule_id = path_id(request, "schedule_id")
    body = await read_json(request, SubstituteOffer)
    services = request.app[SERVICES]
    existing = await services.catalogue.schedule(schedule_id)
    operator_for(request, None if existing is None else existing["hospital_id"])
    if existing is None:
        raise NotFoundError("no such schedule")
    note_before(request, {"schedule_id": schedule_id, "status": existing["status"]})
    offered = await services.substitutions.offer(
        schedule_id,
        body.target_schedule_id,
        respond_within_s=body.respond_within_s,
        reason=body.reason,
    )
    return json_response(offered)
