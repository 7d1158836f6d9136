"""The patient's path through the catalogue: hospitals -> departments -> doctors ->
schedules of a day -> slots. Public (no token). Catalogue rows come from Postgres;
counts come from Redis in one round trip per request; a schedule's availability is
cached for a moment and carries an ETag."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from aiohttp import web

from inventory.api import views
from inventory.api.bodies import json_response, read_query, validate
from inventory.api.context import SERVICES, Services
from inventory.api.instants import instant_text, local_text
from inventory.api.models import Day, Id, Request
from inventory.api.routing import Routes
from inventory.errors import NotFoundError, ValidationFailedError
from inventory.record.catalogue import ScheduleTerms
from inventory.store import keys

routes = Routes(tag="catalogue")


class _IdPath(Request):
    value: Id


class ScheduleDayQuery(Request):
    date: Day


def path_id(request: web.Request, name: str) -> str:
    """A path id, or 404 when it cannot be an id (never reaches a database)."""
    try:
        return validate(_IdPath, {"value": request.match_info[name]}).value
    except ValidationFailedError:
        raise NotFoundError() from None


@routes.get(
    "/v1/hospitals",
    operation_id="list_hospitals",
    summary="Every hospital",
    response=views.HospitalList,
    errors=(503,),
)
async def list_hospitals(request: web.Request) -> web.Response:
    """Every hospital."""
    rows = await request.app[SERVICES].catalogue.hospitals()
    items = [{"hospital_id": r["id"], "name": r["name"], "timezone": r["timezone"]} for r in rows]
    return json_response({"items": items})


@routes.get(
    "/v1/hospitals/{hospital_id}/departments",
    operation_id="department_tree",
    summary="A hospital's departments as a tree",
    response=views.DepartmentTree,
    errors=(404, 503),
)
async def department_tree(request: web.Request) -> web.Response:
    """A hospital's departments as a tree."""
    hospital_id = path_id(request, "hospital_id")
    catalogue = request.app[SERVICES].catalogue
    if await catalogue.hospital(hospital_id) is None:
        raise NotFoundError("no such hospital")
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for row in await catalogue.department_tree(hospital_id):
        node = {"department_id": row["id"], "name": row["name"], "children": []}
        nodes[row["id"]] = node
        parent = nodes.get(row["parent_id"]) if row["parent_id"] else None
        (parent["children"] if parent else roots).append(node)
    return json_response({"hospital_id": hospital_id, "departments": roots})


@routes.get(
    "/v1/departments/{department_id}/doctors",
    operation_id="department_doctors",
    summary="A department's doctors",
    response=views.DoctorList,
    errors=(404, 503),
)
async def department_doctors(request: web.Request) -> web.Response:
    """A department's doctors with title (职称) and specialty (擅长)."""
    department_id = path_id(request, "department_id")
    rows = await request.app[SERVICES].catalogue.department_doctors(department_id)
    items = [
        {"doctor_id": r["id"], "name": r["name"], "title": r["title"], "specialty": r["specialty"]}
        for r in rows
    ]
    return json_response({"items": items})


async def day_schedules(services: Services, department_id: str, day: date) -> list[dict[str, Any]]:
    """Each schedule of a department on a day with its doctor, fee, remaining count,
    release time and, before release, a countdown."""
    catalogue = services.catalogue
    schedules = await catalogue.day_schedules(department_id, day)
    if not schedules:
        return []
    slots = await catalogue.day_slots(department_id, day)
    tag = keys.department_day_tag(department_id, day)
    counts = await services.store.slot_counts(tag, [s["id"] for s in slots])
    remaining: dict[str, int] = {}
    for slot in slots:
        found = counts.get(slot["id"])
        remaining[slot["schedule_id"]] = remaining.get(slot["schedule_id"], 0) + (
            found.remaining if found else 0
        )
    rooms = await catalogue.schedule_rooms([row["id"] for row in schedules])
    now = datetime.now(tz=UTC)
    items = []
    for row in schedules:
        released = row["release_at"] <= now
        zone = await catalogue.zone(row["hospital_id"])
        terms = ScheduleTerms.of(zone, row["cancel_deadline"], row["starts_at"])
        items.append(
            {
                "schedule_id": row["id"],
                "doctor": {
                    "doctor_id": row["doctor_id"],
                    "name": row["doctor_name"],
                    "title": row["doctor_title"],
                    "specialty": row["doctor_specialty"],
                },
                "visit_date": row["visit_date"].isoformat(),
                "session": row["session"],
                "starts_at": local_text(row["starts_at"], zone),
                "ends_at": local_text(row["ends_at"], zone),
                "fee_fen": int(row["fee_fen"]),
                "location": row["location"],
                "status": row["status"],
                "capacity": int(row["capacity"]),
                "remaining": remaining.get(row["id"], 0),
                "release_at": local_text(row["release_at"], zone),
                "released": released,
                "countdown_s": 0
                if released
                else int((row["release_at"] - now).total_seconds()) + 1,
                "cancel_deadline": instant_text(terms.cancel_deadline_ms, zone),
                "cancellable": terms.cancellable(),
                "waiting_room": room_ref(rooms.get(row["id"]), zone),
            }
        )
    return items


def room_ref(row: Any, zone: tzinfo) -> dict[str, str] | None:
    """A schedule's waiting room as the catalogue's views name it (None: it has none)."""
    if row is None:
        return None
    return {
        "release_id": row["release_id"],
        "opens_at": local_text(row["opens_at"], zone),
        "t0": local_text(row["t0"], zone),
    }


@routes.get(
    "/v1/departments/{department_id}/schedules",
    operation_id="department_schedules",
    summary="Schedules of a department on a date, with remaining counts",
    response=views.ScheduleDay,
    query=ScheduleDayQuery,
    errors=(404, 422, 503),
)
async def department_schedules(request: web.Request) -> web.Response:
    """The department's schedules on a date (``?date=YYYY-MM-DD``)."""
    department_id = path_id(request, "department_id")
    query = read_query(request, ScheduleDayQuery)
    items = await day_schedules(request.app[SERVICES], department_id, query.date)
    return json_response(
        {"department_id": department_id, "date": query.date.isoformat(), "items": items}
    )


_availability_cache: dict[str, tuple[float, bytes, str]] = {}


async def schedule_availability(services: Services, schedule_id: str) -> dict[str, Any] | None:
    """A schedule's slots (time windows) with remaining counts, or None."""
    catalogue = services.catalogue
    schedule = await catalogue.schedule(schedule_id)
    if schedule is None:
        return None
    terms = catalogue.remember_terms(schedule)
    zone = terms.zone
    cancel_deadline = instant_text(terms.cancel_deadline_ms, zone)
    cancellable = terms.cancellable()
    slots = await catalogue.schedule_slots(schedule_id)
    rooms = await catalogue.schedule_rooms([schedule_id])
    tag = keys.department_day_tag(schedule["department_id"], schedule["visit_date"])
    counts = await services.store.slot_counts(tag, [s["id"] for s in slots])
    items = []
    for slot in slots:
        found = counts.get(slot["id"])
        if found is not None:
            services.sold_out.saw_counts(
                slot["id"],
                tag,
                remaining=found.remaining,
                held=found.held,
                waiting=found.waiting,
            )
        items.append(
            {
                "slot_id": slot["id"],
                "starts_at": local_text(slot["starts_at"], zone),
                "ends_at": local_text(slot["ends_at"], zone),
                "capacity": int(slot["capacity"]),
                "remaining": found.remaining if found else 0,
                "cancel_deadline": cancel_deadline,
                "cancellable": cancellable,
            }
        )
    return {
        "schedule_id": schedule_id,
        "status": schedule["status"],
        "release_at": local_text(schedule["release_at"], zone),
        "cancel_deadline": cancel_deadline,
        "cancellable": cancellable,
        "waiting_room": room_ref(rooms.get(schedule_id), zone),
        "items": items,
    }


@routes.get(
    "/v1/schedules/{schedule_id}/slots",
    operation_id="schedule_slots",
    summary="A schedule's time windows with remaining counts",
    response=views.Availability,
    errors=(404, 503),
    extra_ok=(304,),
)
async def schedule_slots(request: web.Request) -> web.Response:
    """A schedule's time windows with remaining counts (briefly cached, with an ETag)."""
    schedule_id = path_id(request, "schedule_id")
    services = request.app[SERVICES]
    ttl = services.settings.availability_cache_s
    cached = _availability_cache.get(schedule_id)
    now = time.monotonic()
    if cached is None or cached[0] < now:
        body = await schedule_availability(services, schedule_id)
        if body is None:
            raise NotFoundError("no such schedule")
        payload = json_response(body).body
        assert isinstance(payload, bytes)
        etag = '"' + hashlib.sha256(payload).hexdigest()[:20] + '"'
        cached = (now + ttl, payload, etag)
        if ttl > 0:
            if len(_availability_cache) > 10_000:
                _availability_cache.clear()
            _availability_cache[schedule_id] = cached
    _, payload, etag = cached
    headers = {"ETag": etag, "Cache-Control": f"max-age={int(ttl)}"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=payload, content_type="application/json", headers=headers)
