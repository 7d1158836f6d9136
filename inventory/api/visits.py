"""Visits: check-in (签到/取号) by a kiosk or the front desk, and the no-show rule's bans
as operators see and lift them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from inventory.api import views
from inventory.api.auth import operator_for, principal, staff_for
from inventory.api.bodies import json_response, read_json
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES
from inventory.api.models import BanLift, CheckIn
from inventory.api.paths import hold_id_param
from inventory.api.routing import Routes
from inventory.errors import (
    BookingNotCheckableError,
    CheckInNotOpenError,
    NotFoundError,
)
from inventory.record.catalogue import zone_named
from inventory.record.pool import acquire
from inventory.record.queries import QUERIES
from inventory.visits.bans import ban_history, lift_ban
from inventory.visits.outcomes import record_visit

routes = Routes(tag="visits")


def _booking_id(request: web.Request) -> str:
    return hold_id_param(request, "booking_id", missing="no such booking")


@routes.post(
    "/v1/staff/bookings/{booking_id}/check-in",
    operation_id="check_in_booking",
    summary="Check a patient in (签到/取号) at a kiosk or the front desk",
    response=views.VisitAnswer,
    auth="staff",
    body=CheckIn,
    errors=(400, 401, 403, 404, 409, 422, 503),
    idempotency="recorded",
)
async def check_in_booking(request: web.Request) -> web.Response:
    """The booking is ``visited``: from the visit day on (hospital time), for a booking
    that is open or was marked a no-show (a late arrival); a booking checked in already
    answers as it was."""
    principal(request, staff=True)  # 401/403 before the body is read
    booking_id = _booking_id(request)
    body = await read_json(request, CheckIn)
    services = request.app[SERVICES]
    async with acquire(services.db, timeout_s=5.0) as connection:
        row = await connection.fetchrow(QUERIES["get_booking_visit"], booking_id)
    # A staff or operator token reaches the bookings of the hospitals it names only.
    staff_for(request, row["hospital_id"] if row is not None else None)
    if row is None:  # pragma: no cover - staff_for refused it already
        raise NotFoundError("no such booking")
    zone = zone_named(row["hospital_timezone"])
    if datetime.now(tz=zone).date() < row["visit_date"]:
        raise CheckInNotOpenError(visit_date=row["visit_date"].isoformat())
    recorded = await record_visit(services.db, booking_id, source=body.source)
    if recorded is None or recorded.checked_in_at is None or recorded.checked_in_by is None:
        raise BookingNotCheckableError(status=row["status"])
    return json_response(
        {
            "booking_id": booking_id,
            "status": recorded.status,
            "checked_in_at": recorded.checked_in_at.astimezone(zone).isoformat(),
            "checked_in_by": recorded.checked_in_by,
        }
    )


@routes.get(
    "/v1/operator/hospitals/{hospital_id}/patients/{patient_id}/bans",
    operation_id="get_patient_bans",
    summary="A patient's ban at a hospital and its history",
    response=views.PatientBans,
    auth="operator",
    errors=(401, 403, 404, 503),
)
async def get_patient_bans(request: web.Request) -> web.Response:
    """The patient's ban in force at the hospital (from Postgres; every hospital's,
    ``*``, too) and every ban decision and lift there, newest first."""
    hospital_id = path_id(request, "hospital_id")
    operator_for(request, hospital_id)
    patient_id = path_id(request, "patient_id")
    services = request.app[SERVICES]
    async with acquire(services.db, timeout_s=5.0) as connection:
        current = [
            r
            for r in await connection.fetch(QUERIES["list_patient_bans"], patient_id)
            if r["hospital_id"] in (hospital_id, "*")
        ]
    history = [
        h for h in await ban_history(services.db, patient_id) if h["hospital_id"] == hospital_id
    ]
    now = datetime.now(tz=UTC)

    async def instant(hospital_id: str, moment: datetime) -> str:
        zone = await services.catalogue.zone(hospital_id)
        return moment.astimezone(zone).isoformat()

    bans: list[dict[str, Any]] = [
        {"hospital_id": r["hospital_id"], "banned_until": await instant(r["hospital_id"], until)}
        for r in current
        if (until := r["banned_until"]) > now
    ]
    entries = [
        {
            "hospital_id": h["hospital_id"],
            "action": h["action"],
            "banned_until": (
                await instant(h["hospital_id"], h["banned_until"])
                if h["banned_until"] is not None
                else None
            ),
            "reason": h["reason"],
            "decided_by": h["decided_by"],
            "no_shows": list(h["no_shows"]),
            "at": await instant(h["hospital_id"], h["at"]),
        }
        for h in history
    ]
    return json_response({"patient_id": patient_id, "bans": bans, "history": entries})


@routes.post(
    "/v1/operator/hospitals/{hospital_id}/patients/{patient_id}/bans/lift",
    operation_id="lift_patient_ban",
    summary="Lift a patient's ban at a hospital, with the reason",
    response=views.BanLiftAnswer,
    auth="operator",
    body=BanLift,
    errors=(400, 401, 403, 404, 422, 503),
    idempotency="recorded",
)
async def lift_patient_ban(request: web.Request) -> web.Response:
    """Lift the ban (reserves are taken again at once); ``lifted`` is false when none
    was in force. The reason and the operator's account go to the ban's history, and
    the no-shows before the lift no longer count toward the next ban."""
    hospital_id = path_id(request, "hospital_id")
    who = operator_for(request, hospital_id)
    patient_id = path_id(request, "patient_id")
    body = await read_json(request, BanLift)
    services = request.app[SERVICES]
    lifted = await lift_ban(
        services.db,
        services.store,
        patient_id,
        hospital_id,
        reason=body.reason,
        decided_by=who.account_id,
    )
    return json_response({"patient_id": patient_id, "hospital_id": hospital_id, "lifted": lifted})
