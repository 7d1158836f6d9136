"""The 候补 waitlist: join a sold-out schedule's waitlist, see an entry (its position
while it waits, its offer once a freed unit is held for the patient), leave, and list
the account's entries.

Handlers are thin: parse -> one call of :class:`~inventory.booking.waitlist.Waitlists`
-> render. An offer is an ordinary hold of the account's (``/v1/holds/{hold_id}``: paid,
released or extended like any other); a notifier learns of it from the outbox's
``waitlist_offered`` event.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field

from inventory.api.auth import principal
from inventory.api.bodies import idempotency_key, json_response, read_json, read_query, validate
from inventory.api.catalogue import path_id
from inventory.api.context import SERVICES, client_ip
from inventory.api.instants import instant_text
from inventory.api.models import (
    Day,
    Id,
    Request,
    WaitlistEntryView,
    WaitlistJoinBody,
    WaitlistList,
)
from inventory.api.observability import request_id_of
from inventory.api.paths import hold_id_param
from inventory.api.routing import Routes
from inventory.booking.waitlist import WaitlistAnswer
from inventory.errors import NotFoundError, ValidationFailedError

routes = Routes(tag="waitlist")


class WaitlistListQuery(Request):
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class _DoctorDayPath(Request):
    doctor_id: Id
    visit_date: Day


def entry_view(answer: WaitlistAnswer) -> dict[str, object]:
    """An entry as the API shows it (:class:`WaitlistEntryView`'s JSON)."""
    entry, zone = answer.entry, answer.zone
    offer = None
    if answer.offer is not None:
        hold = answer.offer
        offer = {
            "hold_id": hold.hold_id,
            "slot_id": hold.slot_id,
            "state": hold.state.value,
            "amount_fen": hold.amount_fen,
            "offered_at": instant_text(hold.created_ms, zone),
            "deadline": instant_text(hold.deadline_ms, zone),
        }
    return {
        "entry_id": entry.entry_id,
        "schedule_id": entry.schedule_id,
        "patient_id": entry.patient_id,
        "channel": entry.channel,
        "state": entry.state.value,
        "position": answer.position or None,
        "joined_at": instant_text(entry.created_ms, zone),
        "offer": offer,
        "ended_at": instant_text(entry.ended_ms, zone) if entry.ended_ms else None,
        "end_reason": entry.end_reason,
        "doctor_id": entry.doctor_id or None,
        "day_schedule_ids": list(entry.day_schedule_ids) or None,
    }


@routes.post(
    "/v1/schedules/{schedule_id}/waitlist",
    operation_id="join_waitlist",
    summary="Join a sold-out schedule's 候补 waitlist (a freed unit is then offered in order)",
    ok_status=201,
    response=WaitlistEntryView,
    auth="account",
    body=WaitlistJoinBody,
    idempotency="required",
    errors=(400, 401, 404, 409, 422, 429, 503),
)
async def join_waitlist(request: web.Request) -> web.Response:
    """Put one of the account's patients on a schedule's waitlist."""
    who = principal(request)
    schedule_id = path_id(request, "schedule_id")
    key = idempotency_key(request)
    body = await read_json(request, WaitlistJoinBody)
    answer = await request.app[SERVICES].waitlists.join(
        account_id=who.account_id,
        patient_id=body.patient_id,
        schedule_id=schedule_id,
        channel=body.channel.value,
        idempotency_key=key,
        client_ip=client_ip(request),
        request_id=request_id_of(request),
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return json_response(entry_view(answer), status=201, headers=headers)


@routes.post(
    "/v1/doctors/{doctor_id}/days/{visit_date}/waitlist",
    operation_id="join_doctor_day_waitlist",
    summary="Join a doctor's day on the 候补 waitlist: a unit freed in any of the doctor's"
    " windows that day is offered in join order",
    ok_status=201,
    response=WaitlistEntryView,
    auth="account",
    body=WaitlistJoinBody,
    idempotency="required",
    errors=(400, 401, 404, 409, 422, 429, 503),
)
async def join_doctor_day_waitlist(request: web.Request) -> web.Response:
    """Put one of the account's patients on a doctor's day."""
    who = principal(request)
    doctor_id = path_id(request, "doctor_id")
    key = idempotency_key(request)
    body = await read_json(request, WaitlistJoinBody)  # 400/422 before 404, as every route
    try:
        path = validate(_DoctorDayPath, dict(request.match_info))
    except ValidationFailedError:
        raise NotFoundError() from None  # not a date: no such day
    answer = await request.app[SERVICES].waitlists.join_day(
        account_id=who.account_id,
        patient_id=body.patient_id,
        doctor_id=doctor_id,
        visit_date=path.visit_date,
        channel=body.channel.value,
        idempotency_key=key,
        client_ip=client_ip(request),
        request_id=request_id_of(request),
    )
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return json_response(entry_view(answer), status=201, headers=headers)


@routes.get(
    "/v1/waitlist",
    operation_id="list_waitlist",
    summary="The account's waitlist entries",
    response=WaitlistList,
    auth="account",
    query=WaitlistListQuery,
    errors=(401, 422, 503),
)
async def list_waitlist(request: web.Request) -> web.Response:
    """The account's waitlist entries, newest first."""
    who = principal(request)
    query = read_query(request, WaitlistListQuery)
    answers = await request.app[SERVICES].waitlists.list_for_account(who.account_id, query.limit)
    return json_response({"items": [entry_view(a) for a in answers]})


@routes.get(
    "/v1/waitlist/{entry_id}",
    operation_id="get_waitlist_entry",
    summary="One of the account's waitlist entries: its position, or its offer",
    response=WaitlistEntryView,
    auth="account",
    errors=(401, 404, 503),
)
async def get_waitlist_entry(request: web.Request) -> web.Response:
    """One of the account's waitlist entries."""
    who = principal(request)
    answer = await request.app[SERVICES].waitlists.entry(
        hold_id_param(request, "entry_id"), account_id=who.account_id
    )
    return json_response(entry_view(answer))


@routes.delete(
    "/v1/waitlist/{entry_id}",
    operation_id="leave_waitlist",
    summary="Leave a waitlist (an unpaid offer passes to the next patient)",
    response=WaitlistEntryView,
    auth="account",
    errors=(401, 404, 409, 422, 503),
    idempotency="recorded",
)
async def leave_waitlist(request: web.Request) -> web.Response:
    """Leave a waitlist; an entry that has already ended is answered as it is."""
    who = principal(request)
    answer = await request.app[SERVICES].waitlists.leave(
        hold_id_param(request, "entry_id"),
        account_id=who.account_id,
        request_id=request_id_of(request),
    )
    return json_response(entry_view(answer))
