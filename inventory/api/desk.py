"""The operators' desk: what the staff console reads and does beyond the catalogue
routes. A hospital's release day (every schedule's units now, the waiting rooms), its
bookings found by booking id, the HIS's appointment number or the patient's phone, a
booking cancelled with its refund or marked a no-show by an operator, what a suspension
(停诊) would cancel, and the bans in force.

Every route is hospital-scoped (:func:`operator_for`: another hospital's object answers
404 as a missing one); the two that change something are audited like every operator
route (inventory/api/audit.py), noting the booking as it was. Patients are shown masked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import Field

from inventory.api.audit import note_before
from inventory.api.auth import operator_for
from inventory.api.bodies import json_response, read_json, read_query
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES, Services
from inventory.api.desk_views import (
    DeskBooking,
    DeskBookingList,
    HospitalBanList,
    HospitalDay,
    NoShowAnswer,
    SuspensionPreview,
)
from inventory.api.instants import local_text
from inventory.api.models import Day, HoldId, Id, Printable, Request
from inventory.api.paths import hold_id_param
from inventory.api.releases import release_view
from inventory.api.routing import Routes
from inventory.domain import HoldState
from inventory.errors import (
    BookingNotOpenError,
    NoShowTooEarlyError,
    NotFoundError,
    ValidationFailedError,
)
from inventory.his.compensation import end_booking, open_holds_of_schedule
from inventory.privacy.identity import mask_mobile, mask_name
from inventory.record.bookings import booking_row_view
from inventory.record.catalogue import zone_named
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.store import keys
from inventory.store.slot_store import guarded
from inventory.visits.bans import current_ban
from inventory.visits.outcomes import record_no_show

routes = Routes(tag="operator")

#: Booking statuses an operator can still cancel or mark a no-show.
OPEN_STATUSES: Final = frozenset({"confirmed", "submitted", "his_confirmed"})
#: The reason code of a booking an operator cancelled (its refund's reason too).
OPERATOR_CANCELLED: Final = "operator_cancelled"
#: A full mainland mobile number, or one masked as the API shows it (138****5678).
PHONE_PATTERN: Final = r"^1[3-9][0-9](?:[0-9]{4}|\*{4})[0-9]{4}$"
#: The most bookings of one day a phone search looks through (decrypting each phone).
PHONE_SCAN_LIMIT: Final = 5000
_TIMEOUT_S: Final = 5.0


class HospitalDayQuery(Request):
    date: Day


class BookingFindQuery(Request):
    """At least one of booking_id, his_no, phone, schedule_id or date."""

    booking_id: HoldId | None = None
    his_no: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    phone: Annotated[str, Field(pattern=PHONE_PATTERN)] | None = None
    date: Day | None = None
    schedule_id: Id | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class BanListQuery(Request):
    limit: Annotated[int, Field(ge=1, le=500)] = 200


class DeskCancel(Request):
    """Why the operator cancels (the patient is told; kept in the booking's history)."""

    reason: Annotated[Printable, Field(min_length=1, max_length=200)]


def _booking_id(request: web.Request) -> str:
    return hold_id_param(request, "booking_id", missing="no such booking")


def _local(value: datetime | None, zone: tzinfo) -> str | None:
    return None if value is None else local_text(value, zone)


# -- the release day -------------------------------------------------------------------------


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/day",
    operation_id="get_hospital_day",
    summary="A hospital's schedules of a day with their units now (remaining, held, booked,"
    " waiting) and their waiting rooms: the release-day view",
    response=HospitalDay,
    auth="operator",
    query=HospitalDayQuery,
    errors=(401, 403, 404, 422, 503),
)
async def get_hospital_day(request: web.Request) -> web.Response:
    """Every schedule of the hospital on ``?date=``, every department's, with each slot's
    units read from Redis now, and the waiting room of each queued release among them
    (joined, admitted, sold-out time). Cheap enough to poll every couple of seconds: one
    Postgres read, then one Redis read per department."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    query = read_query(request, HospitalDayQuery)
    services = request.app[SERVICES]
    hospital = await services.catalogue.hospital(hospital_id)
    if hospital is None:
        raise NotFoundError("no such hospital")
    zone = zone_named(hospital["timezone"])
    async with acquire(services.db, timeout_s=_TIMEOUT_S) as connection:
        rows = await connection.fetch(
            QUERIES["list_hospital_day_schedules"], hospital_id, query.date
        )
        recorded = (
            await connection.fetch(
                QUERIES["list_schedules_releases"], hospital_id, [r["id"] for r in rows]
            )
            if rows
            else []
        )
    release_ids = {r["release_id"] for r in recorded}
    schedules_of = {r["release_id"]: set(r["schedule_ids"]) for r in recorded}
    units: dict[str, list[dict[str, Any]]] = {}
    waitlisted: dict[str, int] = {}
    for department_id in dict.fromkeys(r["department_id"] for r in rows):
        found, rooms, waits = await _department_units(
            services, department_id, query.date, zone, rows
        )
        units.update(found)
        waitlisted.update(waits)
        for schedule_id, release_id in rooms.items():
            release_ids.add(release_id)
            schedules_of.setdefault(release_id, set()).add(schedule_id)
    now = datetime.now(tz=UTC)
    items = []
    for row in rows:
        slots = units.get(row["id"], [])
        totals = {n: sum(s[n] for s in slots) for n in ("remaining", "held", "booked", "waiting")}
        room = next((r for r, ids in sorted(schedules_of.items()) if row["id"] in ids), None)
        items.append(
            {
                "schedule_id": row["id"],
                "department_id": row["department_id"],
                "department_name": row["department_name"],
                "doctor_id": row["doctor_id"],
                "doctor_name": row["doctor_name"],
                "doctor_title": row["doctor_title"],
                "session": row["session"],
                "starts_at": local_text(row["starts_at"], zone),
                "ends_at": local_text(row["ends_at"], zone),
                "release_at": local_text(row["release_at"], zone),
                "released": row["release_at"] <= now,
                "status": row["status"],
                "fee_fen": int(row["fee_fen"]),
                "location": row["location"],
                "capacity": sum(s["capacity"] for s in slots),
                **totals,
                "waitlisted": waitlisted.get(row["id"], 0),
                "release_id": room,
                "slots": slots,
            }
        )
    releases = []
    if services.rooms is not None:
        for release_id in sorted(release_ids):
            snap = await services.rooms.rooms.snapshot(release_id)
            if snap is not None and snap.hospital_id == hospital_id:
                releases.append(release_view(snap, zone))
    return json_response(
        {
            "hospital_id": hospital_id,
            "date": query.date.isoformat(),
            "generated_at": local_text(now, zone),
            "items": items,
            "releases": releases,
        }
    )


async def _department_units(
    services: Services, department_id: str, day: date, zone: tzinfo, rows: list[Any]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], dict[str, int]]:
    """One department-day's slots with their units, by schedule; the waiting room each of
    its schedules names now (a room that sold out names none any more); and how many
    patients wait on each schedule's 候补 waitlist."""
    slots = await services.catalogue.day_slots(department_id, day)
    tag = keys.department_day_tag(department_id, day)
    counts = await services.store.slot_counts(tag, [s["id"] for s in slots])
    found: dict[str, list[dict[str, Any]]] = {}
    for slot in slots:
        # A slot not loaded in Redis (yet) has no units to show: all zero but capacity.
        units = counts.get(slot["id"])
        found.setdefault(slot["schedule_id"], []).append(
            {
                "slot_id": slot["id"],
                "starts_at": local_text(slot["starts_at"], zone),
                "ends_at": local_text(slot["ends_at"], zone),
                "capacity": units.capacity if units else int(slot["capacity"]),
                "remaining": units.remaining if units else 0,
                "held": units.held if units else 0,
                "booked": units.booked if units else 0,
                "waiting": units.waiting if units else 0,
            }
        )
    schedule_ids = [r["id"] for r in rows if r["department_id"] == department_id]
    named = await guarded(
        services.store.client.hmget(
            keys.tag_keys(tag).schedules, [f"{s}:room" for s in schedule_ids]
        )
    )
    rooms = {
        schedule_id: value.decode() if isinstance(value, bytes) else str(value)
        for schedule_id, value in zip(schedule_ids, named, strict=True)
        if value
    }
    # The tag's waitlist queue orders "<schedule>|<place>|<entry>" members: one count of
    # a schedule's range each (a doctor's-day entry counts on each schedule it waits on).
    waitq = keys.tag_keys(tag).waitq
    waitlisted = {
        schedule_id: int(
            await guarded(
                services.store.client.zlexcount(waitq, f"[{schedule_id}|", f"({schedule_id}}}")
            )
        )
        for schedule_id in schedule_ids
    }
    return found, rooms, waitlisted


# -- bookings --------------------------------------------------------------------------------


def desk_booking(services: Services, row: Any) -> dict[str, Any]:
    """A ``find_hospital_bookings`` row as :class:`DeskBooking` shows it."""
    zone = zone_named(row["hospital_timezone"])
    name, phone = services.patients.contact(
        row["patient_row_id"], row["name_enc"], row["phone_enc"]
    )
    view = booking_row_view(row)
    payment = None
    if row["payment_id"] is not None:
        payment = {
            "payment_id": row["payment_id"],
            "status": row["payment_status"],
            "amount_fen": int(row["payment_amount_fen"]),
            "paid_at": _local(row["paid_at"], zone),
        }
    refund = None
    if row["refund_id"] is not None:
        refund = {
            "refund_id": row["refund_id"],
            "status": row["refund_status"],
            "amount_fen": int(row["refund_amount_fen"]),
            "reason": row["refund_reason"],
            "requested_at": local_text(row["refund_requested_at"], zone),
            "succeeded_at": _local(row["succeeded_at"], zone),
        }
    return view | {
        "patient_name": mask_name(name),
        "patient_phone": mask_mobile(phone) if phone else "",
        "payment": payment,
        "refund": refund,
        "his": {
            "appointment_id": row["his_appointment_id"],
            "attempts": int(row["his_attempts"]),
            "last_error": row["his_last_error"],
            "submitted_at": _local(row["submitted_at"], zone),
            "confirmed_at": _local(row["his_confirmed_at"], zone),
            "cancelled_at": _local(row["his_cancelled_at"], zone),
        },
        "visit": {
            "checked_in_at": _local(row["checked_in_at"], zone),
            "checked_in_by": row["checked_in_by"],
            "no_show_at": _local(row["no_show_at"], zone),
        },
    }


async def _find(
    services: Services,
    hospital_id: str,
    *,
    booking_id: str | None = None,
    his_no: str | None = None,
    day: date | None = None,
    schedule_id: str | None = None,
    limit: int,
) -> list[Any]:
    async with acquire(services.db, timeout_s=_TIMEOUT_S) as connection:
        return list(
            await connection.fetch(
                QUERIES["find_hospital_bookings"],
                hospital_id,
                booking_id,
                his_no,
                day,
                schedule_id,
                limit,
            )
        )


async def _booking_hospital(services: Services, booking_id: str) -> Any:
    """The booking's visit row (status, hospital, session times), or None."""
    async with acquire(services.db, timeout_s=_TIMEOUT_S) as connection:
        return await connection.fetchrow(QUERIES["get_booking_visit"], booking_id)


async def _desk_view(services: Services, hospital_id: str, booking_id: str) -> dict[str, Any]:
    (row,) = await _find(services, hospital_id, booking_id=booking_id, limit=1)
    return desk_booking(services, row)


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/bookings",
    operation_id="find_hospital_bookings",
    summary="Find a hospital's bookings by booking id, HIS appointment number, the patient's"
    " phone (full or masked) or visit date, with payment, refund, HIS state and visit",
    response=DeskBookingList,
    auth="operator",
    query=BookingFindQuery,
    errors=(401, 403, 404, 422, 503),
)
async def find_hospital_bookings(request: web.Request) -> web.Response:
    """The hospital's bookings matching every filter given, earliest visit first. A
    ``phone`` (``13812345678`` or ``138****5678``) is matched on one visit date (``date``,
    today in the hospital's time zone by default): phones are stored encrypted, so the
    day's bookings are read and their phones compared here."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    query = read_query(request, BookingFindQuery)
    if not (query.booking_id or query.his_no or query.phone or query.schedule_id or query.date):
        raise ValidationFailedError(
            errors=[
                {
                    "field": "booking_id",
                    "reason": "give booking_id, his_no, phone, schedule_id or date",
                }
            ]
        )
    services = request.app[SERVICES]
    day = query.date
    if query.phone and day is None:
        zone = await services.catalogue.zone(hospital_id)
        day = datetime.now(tz=zone).date()
    rows = await _find(
        services,
        hospital_id,
        booking_id=query.booking_id,
        his_no=query.his_no,
        day=day,
        schedule_id=query.schedule_id,
        limit=PHONE_SCAN_LIMIT if query.phone else query.limit + 1,
    )
    if query.phone:
        rows = [r for r in rows if _phone_matches(services, r, query.phone)]
    items = [desk_booking(services, row) for row in rows]
    return json_response({"items": items[: query.limit], "truncated": len(items) > query.limit})


def _phone_matches(services: Services, row: Any, wanted: str) -> bool:
    _, phone = services.patients.contact(row["patient_row_id"], row["name_enc"], row["phone_enc"])
    if not phone:
        return False
    return mask_mobile(phone) == wanted if "*" in wanted else phone == wanted


@routes.post(
    "/v1/operator/bookings/{booking_id}/cancel",
    operation_id="operator_cancel_booking",
    summary="Cancel a booking for the hospital, whatever the cancellation deadline; a paid"
    " fee is refunded",
    response=DeskBooking,
    auth="operator",
    body=DeskCancel,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def operator_cancel_booking(request: web.Request) -> web.Response:
    """Cancel an open booking (the patient is told ``reason``): its fee refunded, its unit
    released, and the HIS told by the submitter's cancellation queue, as a suspension
    cancels. A booking no longer open answers 409 ``booking_not_open``."""
    booking_id = _booking_id(request)
    body = await read_json(request, DeskCancel)
    services = request.app[SERVICES]
    found = await _booking_hospital(services, booking_id)
    operator_for(request, None if found is None else found["hospital_id"])
    if found is None:
        raise NotFoundError("no such booking")
    hospital_id = found["hospital_id"]
    note_before(request, await _desk_view(services, hospital_id, booking_id))
    if found["status"] not in OPEN_STATUSES:
        raise BookingNotOpenError(status=found["status"])
    ended = await end_booking(
        services.db,
        services.store,
        booking_id,
        outcome="cancelled",
        code=OPERATOR_CANCELLED,
        message=body.reason,
        from_status=found["status"],
    )
    if ended is None:  # ended meanwhile by someone else (the patient, a suspension)
        raise BookingNotOpenError()
    view = await _desk_view(services, hospital_id, booking_id)
    # The unit is free again: a slot remembered as sold out takes reserves at once.
    services.sold_out.saw_units(str(view["slot_id"]))
    return json_response(view)


@routes.post(
    "/v1/operator/bookings/{booking_id}/no-show",
    operation_id="mark_no_show",
    summary="Mark a booking a no-show (爽约) once its time window has begun",
    response=NoShowAnswer,
    auth="operator",
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def mark_no_show(request: web.Request) -> web.Response:
    """The patient never came: an open booking is ``no_show`` from the start of its time
    window on (before, 409 ``no_show_too_early``), as the worker marks it after the
    session's end; the no-show rule then looks at it like any other."""
    booking_id = _booking_id(request)
    services = request.app[SERVICES]
    found = await _booking_hospital(services, booking_id)
    operator_for(request, None if found is None else found["hospital_id"])
    if found is None:
        raise NotFoundError("no such booking")
    note_before(request, {"booking_id": booking_id, "status": found["status"]})
    if found["status"] not in OPEN_STATUSES:
        raise BookingNotOpenError(status=found["status"])
    # The patient's own window, not the session: one booked for 11:30 is not missing at 8.
    (row,) = await _find(services, found["hospital_id"], booking_id=booking_id, limit=1)
    now = datetime.now(tz=UTC)
    if now < row["slot_starts_at"]:
        raise NoShowTooEarlyError(slot_starts_at=row["slot_starts_at"].isoformat())
    if not await record_no_show(services.db, booking_id, source="staff", at=now):
        raise BookingNotOpenError()
    zone = zone_named(found["hospital_timezone"])
    return json_response(
        {"booking_id": booking_id, "status": "no_show", "no_show_at": local_text(now, zone)}
    )


# -- suspension preview and bans -------------------------------------------------------------


@routes.get(
    "/v1/operator/schedules/{schedule_id}/suspension-preview",
    operation_id="preview_suspension",
    summary="What suspending a schedule (停诊) would do now: the bookings it cancels and"
    " refunds, the holds it releases",
    response=SuspensionPreview,
    auth="operator",
    errors=(401, 403, 404, 503),
)
async def preview_suspension(request: web.Request) -> web.Response:
    """The schedule's open bookings a suspension would cancel (the same ones the
    suspension's sweep reads), each with its patient masked and its payment; the unpaid
    holds it would release; and the bookings it leaves alone while a substitute doctor's
    offer is live (替诊)."""
    schedule_id = path_id(request, "schedule_id")
    services = request.app[SERVICES]
    schedule = await services.catalogue.schedule(schedule_id)
    operator_for(request, None if schedule is None else schedule["hospital_id"])
    if schedule is None:
        raise NotFoundError("no such schedule")
    hospital_id = schedule["hospital_id"]
    async with acquire(services.db, timeout_s=_TIMEOUT_S) as connection:
        cancelled = {
            r["booking_id"]
            for r in await connection.fetch(QUERIES["list_schedule_open_bookings"], schedule_id)
        }
        kept = await connection.fetch(QUERIES["list_schedule_kept_bookings"], schedule_id)
    rows = await _find(services, hospital_id, schedule_id=schedule_id, limit=PHONE_SCAN_LIMIT)
    bookings = [desk_booking(services, r) for r in rows if r["booking_id"] in cancelled]
    tag = keys.department_day_tag(schedule["department_id"], schedule["visit_date"])
    open_holds = await open_holds_of_schedule(services.store, tag, schedule_id)
    holds = sum(1 for h in open_holds if h.hold_id not in cancelled and h.state is HoldState.HELD)
    refunds = sum(
        b["payment"]["amount_fen"]
        for b in bookings
        if b["payment"] is not None and b["payment"]["status"] == "paid"
    )
    return json_response(
        {
            "schedule_id": schedule_id,
            "status": schedule["status"],
            "bookings": bookings,
            "holds": holds,
            "kept": len(kept),
            "refunds_fen": refunds,
        }
    )


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/bans",
    operation_id="list_hospital_bans",
    summary="The patients banned at a hospital now (the blacklist), with why and until when",
    response=HospitalBanList,
    auth="operator",
    query=BanListQuery,
    errors=(401, 403, 404, 422, 503),
)
async def list_hospital_bans(request: web.Request) -> web.Response:
    """The bans in force at the hospital (and at every hospital) as Postgres records them
    and Redis still holds them, the patient masked,
    with the latest decision's reason, decider and the no-shows it counted; lift one
    with ``POST .../patients/{patient_id}/bans/lift``."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    query = read_query(request, BanListQuery)
    services = request.app[SERVICES]
    zone = await services.catalogue.zone(hospital_id)
    async with acquire(services.db, timeout_s=_TIMEOUT_S) as connection:
        rows = await connection.fetch(QUERIES["list_hospital_bans"], hospital_id, query.limit)
    items = []
    for row in rows:
        # Postgres keeps the bans as projected from the store's events; Redis is what
        # reserves obey, and a lift there reaches Postgres a moment later.
        if await current_ban(services.store, row["patient_id"], row["hospital_id"]) is None:
            continue
        name, phone = services.patients.contact(
            row["patient_row_id"], row["name_enc"], row["phone_enc"]
        )
        items.append(
            {
                "patient_id": row["patient_id"],
                "hospital_id": row["hospital_id"],
                "patient_name": mask_name(name),
                "patient_phone": mask_mobile(phone) if phone else "",
                "banned_until": local_text(row["banned_until"], zone),
                "reason": row["reason"],
                "decided_at": local_text(row["decided_at"], zone),
                "decided_by": row["decided_by"],
                "no_shows": list(row["no_shows"] or []),
            }
        )
    return json_response({"hospital_id": hospital_id, "items": items})
