"""Holds and bookings: reserve, look, release, confirm, cancel.

Handlers are thin: parse -> one domain call -> render. The account comes only from the
token; another account's hold or booking answers 404 exactly like a missing one.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import Field

from inventory.api.auth import principal
from inventory.api.bodies import idempotency_key, json_response, read_json, read_query, validate
from inventory.api.context import SERVICES, client_ip
from inventory.api.instants import instant_text
from inventory.api.models import (
    BookingCancel,
    BookingList,
    BookingView,
    HoldConfirm,
    HoldCreate,
    HoldId,
    HoldView,
    Request,
)
from inventory.api.observability import count_reserve_outcomes, request_id_of
from inventory.api.routing import Routes
from inventory.domain import Hold, HoldOutcome, HoldState, ReserveRequest, SlotLocation
from inventory.errors import (
    NotFoundError,
    RateLimitedError,
    SoldOutError,
    ValidationFailedError,
)
from inventory.payments.errors import PaymentRequiredError
from inventory.payments.refunds import request_refund
from inventory.record.catalogue import ScheduleTerms
from inventory.store import keys

routes = Routes(tag="holds")


class _HoldPath(Request):
    hold_id: HoldId


class _BookingPath(Request):
    booking_id: HoldId


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


async def schedule_terms(
    request: web.Request, schedule_id: str, location: SlotLocation | None = None
) -> ScheduleTerms:
    """The terms of a hold's schedule (a schedule is never deleted while it has holds);
    ``location`` (one of its slots') lets them come from Redis (see PgCatalogue.terms)."""
    catalogue = request.app[SERVICES].catalogue
    terms = catalogue.known_terms(schedule_id) or await catalogue.terms(
        schedule_id, location=location
    )
    if terms is None:
        raise NotFoundError("no such schedule")
    return terms


async def booking_view(request: web.Request, booking_id: str, account_id: str) -> dict[str, Any]:
    """The whole booking view (as GET /v1/bookings/{id} answers it)."""
    bookings = request.app[SERVICES].bookings
    booking = await bookings.get_for_account(booking_id, account_id)
    if booking is None:
        raise NotFoundError("no such booking")
    return booking


def _hold_id(request: web.Request, name: str = "hold_id") -> str:
    model = _HoldPath if name == "hold_id" else _BookingPath
    try:
        parsed = validate(model, {name: request.match_info[name]})
    except ValidationFailedError:
        raise NotFoundError() from None
    return str(getattr(parsed, name))


async def _own_hold(request: web.Request, hold_id: str, account_id: str) -> Hold:
    hold = await request.app[SERVICES].store.get_hold(hold_id)
    if hold is None or hold.account_id != account_id:
        raise NotFoundError("no such hold")
    return hold


@routes.post(
    "/v1/holds",
    operation_id="create_hold",
    summary="Reserve one unit of a slot",
    ok_status=201,
    response=HoldView,
    auth="account",
    body=HoldCreate,
    idempotency="required",
    errors=(400, 401, 404, 409, 422, 429, 503),
)
@count_reserve_outcomes
async def create_hold(request: web.Request) -> web.Response:
    """Reserve one unit of a slot for one of the account's patients."""
    who = principal(request)
    key = idempotency_key(request)
    body = await read_json(request, HoldCreate)
    services = request.app[SERVICES]
    sold_out_tag = services.sold_out.tag_if_sold_out(body.slot_id)
    if sold_out_tag is not None and not await services.store.hold_exists(
        keys.hold_id_for(who.account_id, key, sold_out_tag)
    ):
        # Seen sold out within the availability cache's lifetime: answered without the
        # reserve script, the rate-limit call or Postgres. A retry of a reserve that did
        # take a unit (its key names an existing hold) goes on to get that hold back.
        raise SoldOutError()
    limiter = services.limiter
    limits = limiter.buckets(account_id=who.account_id, client_ip=client_ip(request))
    location = services.catalogue.known_slot_location(body.slot_id)
    if location is None or not services.patients.known_link(body.patient_id, who.account_id):
        # Postgres must be asked: count the request first, by a call of its own, so a
        # caller over its limit is refused before it costs Postgres anything. Known
        # slots and patients (the spike's hot path) are counted by the reserve call.
        await limiter.count(limits)
        limits = None
        location = await services.catalogue.slot_location(body.slot_id)
        if location is None:
            raise NotFoundError("no such slot")
        if not await services.patients.belongs_to(body.patient_id, who.account_id):
            raise NotFoundError("no such patient")
    try:
        outcome = await services.store.reserve(
            ReserveRequest(
                hospital_id=location.hospital_id,
                department_id=location.department_id,
                visit_date=location.visit_date,
                slot_id=body.slot_id,
                account_id=who.account_id,
                patient_id=body.patient_id,
                channel=body.channel.value,
                idempotency_key=key,
            ),
            request_id=request_id_of(request),
            rate_limits=limits,
        )
    except RateLimitedError as limited:
        limiter.refused(limited)
        raise
    except SoldOutError:
        services.sold_out.saw_sold_out(
            body.slot_id, keys.department_day_tag(location.department_id, location.visit_date)
        )
        raise
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    terms = await schedule_terms(request, outcome.hold.schedule_id, location)
    return json_response(hold_view(outcome.hold, terms), status=201, headers=headers)


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
    hold = await _own_hold(request, _hold_id(request), who.account_id)
    return json_response(hold_view(hold, await schedule_terms(request, hold.schedule_id)))


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
    hold_id = _hold_id(request)
    hold = await _own_hold(request, hold_id, who.account_id)
    if hold.state is HoldState.BOOKED:
        raise ValidationFailedError(
            "this hold is a booking: cancel it with POST /v1/bookings/{id}/cancel",
            errors=[{"field": "hold_id", "reason": "is a booking"}],
        )
    services = request.app[SERVICES]
    outcome = await services.store.release(
        hold_id,
        account_id=who.account_id,
        reason="patient_released",
        request_id=request_id_of(request),
    )
    # The unit is back (or waiting): this process stops refusing the slot from memory.
    services.sold_out.saw_units(outcome.hold.slot_id)
    terms = await schedule_terms(request, hold.schedule_id)
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
    hold = await _own_hold(request, hold_id, who.account_id)
    services = request.app[SERVICES]
    if services.settings.payments.enabled and hold.amount_fen > 0:
        # With a payment provider, a front end's own "payment reference" proves
        # nothing: a hold with a fee is confirmed by the provider's verified
        # notification only (POST /v1/holds/{id}/payments, then the callback).
        if hold.state is not HoldState.BOOKED:
            raise PaymentRequiredError(
                "this hold has a fee: it is confirmed when its payment is notified",
                state=hold.state.value,
            )
        # Already booked by its payment (a front end confirming after paying): the
        # booking, answered like any confirm once it is durable (record is idempotent).
        await services.bookings.record(hold)
        return json_response(await booking_view(request, hold_id, who.account_id))
    outcome: HoldOutcome = await services.store.confirm(
        hold_id,
        account_id=who.account_id,
        payment_ref=body.payment_ref,
        request_id=request_id_of(request),
    )
    await services.bookings.record(outcome.hold)
    return json_response(await booking_view(request, hold_id, who.account_id))


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
    return json_response(await booking_view(request, booking_id, who.account_id))


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
    services = request.app[SERVICES]
    hold = await _own_hold(request, booking_id, who.account_id)
    if hold.state not in (HoldState.BOOKED, HoldState.CANCELLED):
        raise NotFoundError("no such booking")
    outcome = await services.store.release(
        booking_id,
        account_id=who.account_id,
        reason=body.reason,
        request_id=request_id_of(request),
    )
    await services.bookings.record(outcome.hold)
    services.sold_out.saw_units(outcome.hold.slot_id)
    # A paid booking's fee goes back, once (GET /v1/bookings/{id}/refund shows it; the
    # payment loop requests it too if this process dies first).
    await request_refund(services.db, booking_id, None, body.reason, f"cancel:{booking_id}")
    return json_response(await booking_view(request, booking_id, who.account_id))
