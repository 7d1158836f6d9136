"""Holds and bookings: reserve, look, release, confirm, cancel.

Handlers are thin: parse -> one call of the booking service
(:class:`~inventory.booking.reservations.Reservations`) -> render. The account comes only
from the token; another account's hold or booking answers 404 exactly like a missing one.
"""

from __future__ import annotations

import time
from typing import Annotated, Final

from aiohttp import web
from pydantic import Field

from inventory.api.admission import admit_reserve
from inventory.api.auth import principal
from inventory.api.bodies import idempotency_key, json_response, read_json, read_query
from inventory.api.context import SERVICES, client_ip
from inventory.api.instants import instant_text
from inventory.api.models import (
    BookingCancel,
    BookingList,
    BookingReschedule,
    BookingView,
    HoldConfirm,
    HoldCreate,
    HoldList,
    HoldView,
    Request,
    RescheduleView,
    SubstitutionAnswer,
    SubstitutionOfferView,
    SubstitutionResult,
)
from inventory.api.observability import request_id_of, reserve_failure
from inventory.api.paths import hold_id_param
from inventory.api.reserve_body import read_reserve_body
from inventory.api.routing import Routes
from inventory.domain import Hold, HoldState
from inventory.ops import metrics
from inventory.record.catalogue import ScheduleTerms

routes = Routes(tag="holds")


class BookingListQuery(Request):
    limit: Annotated[int, Field(ge=1, le=200)] = 50


#: Booking statuses a patient can still cancel (until the cancellation deadline).
CANCELLABLE_STATES: Final = frozenset({HoldState.HELD, HoldState.BOOKED})


def hold_view(hold: Hold, terms: ScheduleTerms, now_ms: int | None = None) -> dict[str, object]:
    """A hold as the API shows it: :class:`HoldView`'s JSON, built directly because it
    is on the reserve path, where a pydantic model and its dump cost measurably
    (docs/benchmarks.md);
    tests/api/test_views.py checks the two agree. ``cancellable``: the booking this
    hold is (or becomes when paid) can still be cancelled now."""
    zone = terms.zone
    return {
        "hold_id": hold.hold_id,
        "slot_id": hold.slot_id,
        "schedule_id": hold.schedule_id,
        "patient_id": hold.patient_id,
        "channel": hold.channel,
        "state": hold.state.value,
        "amount_fen": hold.amount_fen,
        "created_at": instant_text(hold.created_ms, zone),
        "deadline": instant_text(hold.deadline_ms, zone),
        "extended": hold.extended,
        "cancel_deadline": instant_text(terms.cancel_deadline_ms, zone),
        "cancellable": hold.state in CANCELLABLE_STATES and terms.cancellable(now_ms),
    }


def _hold_id(request: web.Request, name: str = "hold_id") -> str:
    return hold_id_param(request, name)


@routes.post(
    "/v1/holds",
    operation_id="create_hold",
    summary="Reserve one unit of a slot",
    ok_status=201,
    response=HoldView,
    auth="account",
    body=HoldCreate,
    idempotency="required",
    errors=(400, 401, 403, 404, 409, 422, 429, 503),
)
async def create_hold(request: web.Request) -> web.Response:
    """Reserve one unit of a slot for one of the account's patients; every answer is
    counted by outcome (ok, replay, or the error's code), here rather than by a
    wrapper: one coroutine frame less on the hottest route (docs/benchmarks.md)."""
    try:
        who = principal(request)
        key = idempotency_key(request)
        body = await read_reserve_body(request)
        # An admitted patient's reserve is never shed; another past the bound is now.
        admit_reserve(request, admission_token=body.admission_token)
        outcome, terms = await request.app[SERVICES].reservations.reserve(
            account_id=who.account_id,
            patient_id=body.patient_id,
            slot_id=body.slot_id,
            channel=body.channel,
            idempotency_key=key,
            client_ip=client_ip(request),
            request_id=request_id_of(request),
            admission_token=body.admission_token,
        )
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        response = json_response(hold_view(outcome.hold, terms), status=201, headers=headers)
    except Exception as error:
        metrics.observe_reserve(reserve_failure(error))
        raise
    metrics.observe_reserve("replay" if outcome.replayed else "ok")
    return response


class HoldListQuery(Request):
    #: A patient has a handful of open holds at most (the patient rules bound them).
    limit: Annotated[int, Field(ge=1, le=50)] = 20


@routes.get(
    "/v1/holds",
    operation_id="list_holds",
    summary="The account's holds still waiting for payment (a hold made in the last"
    " moment may take about a second to appear)",
    response=HoldList,
    auth="account",
    query=HoldListQuery,
    errors=(401, 422, 503),
)
async def list_holds(request: web.Request) -> web.Response:
    """The account's holds still waiting for payment, newest first, each with the time
    left to pay (its ``deadline``)."""
    who = principal(request)
    query = read_query(request, HoldListQuery)
    now_ms = int(time.time() * 1000)
    found = await request.app[SERVICES].reservations.open_holds(
        account_id=who.account_id, limit=query.limit, now_ms=now_ms
    )
    return json_response({"items": [hold_view(hold, terms, now_ms) for hold, terms in found]})


@routes.get(
    "/v1/holds/{hold_id}",
    operation_id="get_hold",
    summary="One of the account's holds",
    response=HoldView,
    auth="account",
    errors=(401, 404, 503),
)
async def get_hold(request: web.Request) -> web.Response:
    """One of the account's holds."""
    who = principal(request)
    hold, terms = await request.app[SERVICES].reservations.hold(
        _hold_id(request), account_id=who.account_id
    )
    return json_response(hold_view(hold, terms))


@routes.delete(
    "/v1/holds/{hold_id}",
    operation_id="release_hold",
    summary="Give a hold back",
    response=HoldView,
    auth="account",
    errors=(401, 404, 409, 422, 503),
    idempotency="recorded",
)
async def release_hold(request: web.Request) -> web.Response:
    """Give a hold back before paying (a booking is cancelled with /cancel instead)."""
    who = principal(request)
    outcome, terms = await request.app[SERVICES].reservations.release(
        _hold_id(request), account_id=who.account_id, request_id=request_id_of(request)
    )
    return json_response(hold_view(outcome.hold, terms))


@routes.post(
    "/v1/holds/{hold_id}/confirm",
    operation_id="confirm_hold",
    summary="Confirm a paid hold, answered once the booking is durable (with payments on:"
    " holds without a fee only; the provider confirms the others)",
    response=BookingView,
    auth="account",
    body=HoldConfirm,
    errors=(400, 401, 404, 409, 422, 503),
    idempotency="recorded",
)
async def confirm_hold(request: web.Request) -> web.Response:
    """Confirm a paid hold: the answer comes only once the booking is in Postgres."""
    who = principal(request)
    hold_id = _hold_id(request)
    body = await read_json(request, HoldConfirm)
    booking = await request.app[SERVICES].reservations.confirm(
        hold_id,
        account_id=who.account_id,
        payment_ref=body.payment_ref,
        request_id=request_id_of(request),
    )
    return json_response(booking)


@routes.get(
    "/v1/bookings",
    operation_id="list_bookings",
    summary="The account's bookings",
    tag="bookings",
    response=BookingList,
    auth="account",
    query=BookingListQuery,
    errors=(401, 422, 503),
)
async def list_bookings(request: web.Request) -> web.Response:
    """The account's bookings, newest first."""
    who = principal(request)
    query = read_query(request, BookingListQuery)
    items = await request.app[SERVICES].bookings.list_for_account(who.account_id, query.limit)
    return json_response({"items": items})


@routes.get(
    "/v1/bookings/{booking_id}",
    operation_id="get_booking",
    summary="One of the account's bookings",
    tag="bookings",
    response=BookingView,
    auth="account",
    errors=(401, 404, 503),
)
async def get_booking(request: web.Request) -> web.Response:
    """One of the account's bookings."""
    who = principal(request)
    booking_id = _hold_id(request, "booking_id")
    booking = await request.app[SERVICES].reservations.booking(
        booking_id, account_id=who.account_id
    )
    return json_response(booking)


@routes.post(
    "/v1/bookings/{booking_id}/cancel",
    operation_id="cancel_booking",
    summary="Cancel a booking (until the cancellation deadline)",
    tag="bookings",
    response=BookingView,
    auth="account",
    body=BookingCancel,
    errors=(400, 401, 404, 409, 422, 503),
    idempotency="recorded",
)
async def cancel_booking(request: web.Request) -> web.Response:
    """Cancel a booking, until the hospital's cancellation deadline."""
    who = principal(request)
    booking_id = _hold_id(request, "booking_id")
    body = await read_json(request, BookingCancel)
    booking = await request.app[SERVICES].reservations.cancel(
        booking_id,
        account_id=who.account_id,
        reason=body.reason,
        request_id=request_id_of(request),
    )
    return json_response(booking)


@routes.post(
    "/v1/bookings/{booking_id}/reschedule",
    operation_id="reschedule_booking",
    summary="Move a booking to another window (改约), keeping its payment",
    tag="bookings",
    response=RescheduleView,
    ok_status=201,
    auth="account",
    body=BookingReschedule,
    errors=(400, 401, 404, 409, 422, 503),
    idempotency="required",
)
async def reschedule_booking(request: web.Request) -> web.Response:
    """Move one of the account's bookings to another slot of its hospital, until the
    cancellation deadline: the new booking (a retry with the same key gets it again)."""
    who = principal(request)
    booking_id = _hold_id(request, "booking_id")
    key = idempotency_key(request)
    body = await read_json(request, BookingReschedule)
    answer = await request.app[SERVICES].rescheduling.reschedule(
        booking_id,
        account_id=who.account_id,
        slot_id=body.slot_id,
        idempotency_key=key,
        request_id=request_id_of(request),
        method=body.method,
    )
    return json_response(answer, status=201)


@routes.get(
    "/v1/bookings/{booking_id}/substitution",
    operation_id="get_substitution_offer",
    summary="The substitute doctor offered to a booking of a suspended schedule (替诊)",
    tag="bookings",
    response=SubstitutionOfferView,
    auth="account",
    errors=(401, 404, 503),
)
async def get_substitution_offer(request: web.Request) -> web.Response:
    """The offer made to one of the account's bookings (404: none)."""
    who = principal(request)
    booking_id = _hold_id(request, "booking_id")
    offer = await request.app[SERVICES].substitutions.get(booking_id, account_id=who.account_id)
    return json_response(offer)


@routes.post(
    "/v1/bookings/{booking_id}/substitution",
    operation_id="answer_substitution",
    summary="Accept (the booking moves) or decline (refund) a substitute doctor (替诊)",
    tag="bookings",
    response=SubstitutionResult,
    auth="account",
    body=SubstitutionAnswer,
    errors=(400, 401, 404, 409, 422, 503),
    idempotency="required",
)
async def answer_substitution(request: web.Request) -> web.Response:
    """Accept: the booking moves to the substitute's schedule, payment kept (a cheaper
    one's difference refunded); decline: the booking is cancelled and refunded."""
    who = principal(request)
    booking_id = _hold_id(request, "booking_id")
    key = idempotency_key(request)
    body = await read_json(request, SubstitutionAnswer)
    answer = await request.app[SERVICES].substitutions.answer(
        booking_id,
        account_id=who.account_id,
        accept=body.accept,
        idempotency_key=key,
        request_id=request_id_of(request),
        method=body.method,
    )
    return json_response(answer)
