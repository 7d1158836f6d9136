"""Release day's waiting room: open a release (operators), join, follow a ticket by
Server-Sent Events or long-poll, the public view with the draw's commitment, the
operator's live view and fairness report (docs/release-day.md).

The status paths read Redis only: the first answer is one read-only script call, and
the stream's later ones mostly follow from the release's fields that one watcher per
release and process reads for all of its clients (inventory/release/watch.py).
"""

from __future__ import annotations

import asyncio
import zoneinfo
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import Field

from inventory.api.admission import detach
from inventory.api.auth import operator_for, principal
from inventory.api.bodies import json_response, read_json, read_query
from inventory.api.context import SERVICES
from inventory.api.event_stream import event_bytes, send_last
from inventory.api.instants import instant_text
from inventory.api.models import Id, Request
from inventory.api.observability import request_id_of
from inventory.api.release_views import (
    FairnessReport,
    ReleaseLiveView,
    ReleaseView,
    TicketView,
)
from inventory.api.routing import Routes
from inventory.errors import NotFoundError
from inventory.release.rooms import FINAL_OUTCOMES, RoomSnapshot, TicketStatus
from inventory.release.service import WaitingRooms
from inventory.release.watch import RoomWatch, Waiter
from inventory.store import keys

routes = Routes(tag="releases")

#: A stream's keep-alive comment after this long without news.
KEEPALIVE_S: Final = 15.0


class ReleaseOpen(Request):
    schedule_ids: Annotated[list[Id], Field(min_length=1, max_length=50)]
    name: Id | None = None


class TicketCreate(Request):
    patient_id: Id


class TicketQuery(Request):
    wait_s: Annotated[float, Field(ge=0, le=30)] = 0
    after: Annotated[str, Field(max_length=100)] = ""


def _rooms(request: web.Request) -> WaitingRooms:
    rooms = request.app[SERVICES].rooms
    if rooms is None:
        raise NotFoundError()
    return rooms


def _release_id(request: web.Request) -> str:
    value = request.match_info["release_id"]
    try:
        keys.tag_of_release(value)
    except keys.InvalidIdError:
        raise NotFoundError() from None
    return value


def _ticket_id(request: web.Request) -> str:
    try:
        return keys.check_ticket_id(request.match_info["ticket_id"])
    except keys.InvalidIdError:
        raise NotFoundError() from None


async def _zone(request: web.Request, snap: RoomSnapshot) -> zoneinfo.ZoneInfo:
    return await request.app[SERVICES].catalogue.zone(snap.hospital_id)


def _waitlist(snap: RoomSnapshot) -> dict[str, Any] | None:
    if snap.state != "sold_out":
        return None
    return {"available": True, "schedule_ids": list(snap.schedules)}


def release_view(snap: RoomSnapshot, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """A release as :class:`ReleaseView` shows it."""
    return {
        "release_id": snap.release_id,
        "state": snap.state,
        "t0": instant_text(snap.t0_ms, zone),
        "opens_at": instant_text(snap.opens_ms, zone),
        "schedule_ids": list(snap.schedules),
        "seed_hash": snap.seed_hash,
        "seed": snap.seed or None,
        "joined": snap.joined,
        "drawn": snap.drawn,
        "admitted": snap.admitted,
        "sold_out_at": instant_text(snap.sold_out_ms, zone) if snap.sold_out_ms else None,
        "waitlist": _waitlist(snap),
    }


def ticket_view(
    status: TicketStatus, snap: RoomSnapshot, zone: zoneinfo.ZoneInfo, now_ms: int
) -> dict[str, Any]:
    """A ticket as :class:`TicketView` shows it."""
    outcome = status.outcome(now_ms)
    drawn = status.position > 0
    ahead = status.ahead() if drawn and outcome == "waiting" else None
    eta = None
    if ahead is not None and snap.drawn_ms and now_ms > snap.drawn_ms and snap.admitted:
        eta = round(ahead / (snap.admitted / ((now_ms - snap.drawn_ms) / 1000)), 1)
    admitted = outcome == "admitted"
    return {
        "release_id": status.release_id,
        "ticket_id": status.ticket_id,
        "patient_id": status.patient_id,
        "state": status.state,
        "outcome": outcome,
        "position": status.position if drawn else None,
        "ahead": ahead,
        "eta_s": eta,
        "admission_token": status.token if admitted else None,
        "admission_expires_at": instant_text(status.token_expiry_ms, zone) if admitted else None,
        "joined_at": instant_text(status.joined_ms, zone),
        "t0": instant_text(status.t0_ms, zone),
        # Changes only when the answer a client acts on changes (not with every place).
        "version": f"{outcome}.{status.position}",
        "waitlist": _waitlist(snap) if outcome == "sold_out" else None,
    }


@routes.post(
    "/v1/operator/releases",
    operation_id="open_release",
    summary="Open the waiting room of a release (schedules of one department and day with"
    " one release time)",
    tag="operator",
    ok_status=201,
    response=ReleaseView,
    auth="operator",
    body=ReleaseOpen,
    errors=(400, 401, 403, 404, 409, 422, 503),
    extra_ok=(200,),
)
async def open_release(request: web.Request) -> web.Response:
    """Open a release's room; the same release again answers 200 with the same view."""
    principal(request, operator=True)
    body = await read_json(request, ReleaseOpen)
    catalogue = request.app[SERVICES].catalogue
    for schedule_id in body.schedule_ids:
        # A hospital operator opens rooms of its hospitals' schedules only (another's
        # answers 404 like a missing one; the room refuses missing ones itself).
        schedule = await catalogue.schedule(schedule_id)
        operator_for(request, None if schedule is None else schedule["hospital_id"])
    rooms = _rooms(request)
    opened = await rooms.open(
        list(body.schedule_ids), name=body.name, request_id=request_id_of(request)
    )
    snap = await rooms.snapshot(opened.release_id)
    view = release_view(snap, await _zone(request, snap))
    return json_response(view, status=201 if opened.created else 200)


@routes.get(
    "/v1/releases/{release_id}",
    operation_id="get_release",
    summary="A queued release: its room's state and the draw's seed hash (the seed once drawn)",
    response=ReleaseView,
    errors=(404, 503),
)
async def get_release(request: web.Request) -> web.Response:
    """The public view of a release."""
    snap = await _rooms(request).snapshot(_release_id(request))
    return json_response(release_view(snap, await _zone(request, snap)))


@routes.post(
    "/v1/releases/{release_id}/tickets",
    operation_id="join_release",
    summary="Join a release's waiting room for one of the account's patients (again: the"
    " same ticket)",
    ok_status=201,
    response=TicketView,
    auth="account",
    body=TicketCreate,
    errors=(400, 401, 404, 409, 422, 503),
    extra_ok=(200,),
)
async def join_release(request: web.Request) -> web.Response:
    """Join; answers the ticket and where it stands."""
    who = principal(request)
    release_id = _release_id(request)
    body = await read_json(request, TicketCreate)
    rooms = _rooms(request)
    status, created = await rooms.join(
        release_id,
        account_id=who.account_id,
        patient_id=body.patient_id,
        request_id=request_id_of(request),
    )
    watch = await rooms.watchers.get(release_id)
    snap = watch.snapshot or await rooms.snapshot(release_id)
    view = ticket_view(status, snap, await _zone(request, snap), rooms.now_ms())
    return json_response(view, status=201 if created else 200)


@routes.get(
    "/v1/releases/{release_id}/tickets/{ticket_id}",
    operation_id="get_ticket",
    summary="One of the account's tickets; with wait_s and after (the last answer's"
    " version), waits up to wait_s for a change (long-poll)",
    response=TicketView,
    auth="account",
    query=TicketQuery,
    errors=(401, 404, 422, 503),
)
async def get_ticket(request: web.Request) -> web.Response:
    """A ticket's status, at once or once it changed (long-poll)."""
    who = principal(request)
    release_id, ticket_id = _release_id(request), _ticket_id(request)
    query = read_query(request, TicketQuery)
    rooms = _rooms(request)
    status, watch = await _ticket_status(rooms, release_id, ticket_id, who.account_id)
    snap = watch.snapshot or await rooms.snapshot(release_id)
    zone = await _zone(request, snap)
    view = ticket_view(status, snap, zone, rooms.now_ms())
    if not query.after or view["version"] != query.after or query.wait_s <= 0:
        return json_response(view)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.wait_s
    detach(request)  # it waits now: no longer work in flight
    waiter = watch.subscribe(status, stream=False)
    try:
        while view["version"] == query.after:
            left = deadline - loop.time()
            if left <= 0 or not await watch.wait_change(waiter, left):
                break
            snap = watch.snapshot or snap
            status = await _next_status(rooms, watch, waiter, status, snap, who.account_id)
            view = ticket_view(status, snap, zone, rooms.now_ms())
    finally:
        watch.unsubscribe(waiter)
    return json_response(view)


@routes.get(
    "/v1/releases/{release_id}/tickets/{ticket_id}/events",
    operation_id="stream_ticket",
    summary='A ticket\'s status as Server-Sent Events (event "status", data a TicketView)'
    " until its outcome is final or admitted",
    response={"type": "string"},
    auth="account",
    errors=(401, 404, 503),
    content_types=("text/event-stream",),
)
async def stream_ticket(request: web.Request) -> web.StreamResponse:
    """Stream a ticket's status: once at once, then on every change that matters."""
    who = principal(request)
    release_id, ticket_id = _release_id(request), _ticket_id(request)
    rooms = _rooms(request)
    # Everything that can refuse runs before the stream starts: refusals stay problem+json.
    status, watch = await _ticket_status(rooms, release_id, ticket_id, who.account_id)
    snap = watch.snapshot or await rooms.snapshot(release_id)
    zone = await _zone(request, snap)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    detach(request)  # it waits now: no longer work in flight
    waiter = watch.subscribe(status, stream=True)

    def answer_sold_out(sold_out: RoomSnapshot) -> bool:
        # Called from the watcher's sell-out pass while this handler waits: the answer
        # when it follows from the shared fields, else False (the handler reads it).
        followed = waiter.follow(status, sold_out)
        if followed is None:
            return False
        final = ticket_view(followed, sold_out, zone, rooms.now_ms())
        if final["outcome"] not in FINAL_OUTCOMES:
            return False
        return send_last(request, response, event_bytes(final))

    waiter.on_sold_out = answer_sold_out
    try:
        view = ticket_view(status, snap, zone, rooms.now_ms())
        await response.write(event_bytes(view))
        sent = view
        while view["outcome"] not in FINAL_OUTCOMES and view["outcome"] != "admitted":
            woken = await watch.wait_change(waiter, KEEPALIVE_S)
            if waiter.answered:
                return response  # the sell-out's pass sent the answer and the end
            if not woken:
                await response.write(b": keep-alive\n\n")
                continue
            snap = watch.snapshot or snap
            status = await _next_status(rooms, watch, waiter, status, snap, who.account_id)
            view = ticket_view(status, snap, zone, rooms.now_ms())
            # The watcher wakes a waiting stream for its place at most once a second.
            if view["version"] != sent["version"] or view["ahead"] != sent["ahead"]:
                await response.write(event_bytes(view))
                sent = view
        await response.write_eof()
    except ConnectionResetError:
        # The client went away (a front end closes its stream once it has its
        # answer, or the patient left): nothing to answer, nothing went wrong. Not
        # caught, it would be logged with its traceback as a failed request: at a
        # sell-out, thousands of times in the second that matters.
        pass
    finally:
        watch.unsubscribe(waiter)
    return response


async def _ticket_status(
    rooms: WaitingRooms, release_id: str, ticket_id: str, account_id: str
) -> tuple[TicketStatus, RoomWatch]:
    """The account's ticket now, and its release's watcher. A ticket this process read
    before is answered from the watcher's shared fields when its answer follows from
    them (:meth:`RoomWatch.known`: a poll then costs no Redis call); otherwise it is
    read (one script call, which refuses another account's or an unknown ticket) and
    remembered. Only a release whose ticket was read starts a watcher."""
    watch = rooms.watchers.running(release_id)
    if watch is not None:
        known = watch.known(ticket_id, account_id)
        if known is not None:
            watch.touch()
            return known, watch
    status = await rooms.status(release_id, ticket_id, account_id=account_id)
    watch = await rooms.watchers.get(release_id)
    watch.remember(account_id, status)
    return status, watch


async def _next_status(
    rooms: WaitingRooms,
    watch: RoomWatch,
    waiter: Waiter,
    status: TicketStatus,
    snap: RoomSnapshot,
    account_id: str,
) -> TicketStatus:
    """A woken client's status: from the shared fields and its place when it follows
    from them, else read once from Redis (its turn came, it holds a token, it missed
    the draw) and filed again."""
    followed = waiter.follow(status, snap)
    if followed is not None:
        return followed
    status = await rooms.status(status.release_id, status.ticket_id, account_id=account_id)
    watch.remember(account_id, status)
    watch.place(waiter, status)
    return status


@routes.get(
    "/v1/operator/releases/{release_id}",
    operation_id="release_live",
    summary="A release's live view: joined, admitted, used, lapsed, the slots' counts and"
    " the admission rate",
    tag="operator",
    response=ReleaseLiveView,
    auth="operator",
    errors=(401, 403, 404, 503),
)
async def release_live(request: web.Request) -> web.Response:
    """The operator's live view of a release."""
    principal(request, operator=True)
    live = await _rooms(request).live(_release_id(request))
    snap: RoomSnapshot = live.pop("snapshot")
    operator_for(request, snap.hospital_id)  # another hospital's release: 404
    return json_response(
        {
            "release": release_view(snap, await _zone(request, snap)),
            "outstanding": snap.outstanding,
            "used": snap.used,
            "lapsed": snap.lapsed,
            "late": snap.late,
            "factor": snap.factor_pm / 1000,
            "token_s": snap.token_ms / 1000,
            **live,
        }
    )


@routes.get(
    "/v1/operator/releases/{release_id}/fairness",
    operation_id="release_fairness",
    summary="A release's fairness report: the draw recomputed from the revealed seed, and"
    " Spearman's rho and a chi-square of join time against drawn position",
    tag="operator",
    response=FairnessReport,
    auth="operator",
    errors=(401, 403, 404, 503),
)
async def release_fairness(request: web.Request) -> web.Response:
    """The fairness report of a release."""
    principal(request, operator=True)
    report = await _rooms(request).fairness(_release_id(request))
    snap: RoomSnapshot = report.pop("snapshot")
    operator_for(request, snap.hospital_id)  # another hospital's release: 404
    report.setdefault("spearman_rho", None)
    report.setdefault("chi_square", None)
    report.setdefault("chi_square_dof", None)
    return json_response({"release": release_view(snap, await _zone(request, snap)), **report})
