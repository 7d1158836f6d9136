"""The two endpoints of the original product brief, for existing mini-program front
ends, answering in their ``{"code", "message", "data"}`` envelope.

``code`` is 0 on success; on failure it is the HTTP status times 100 (40000, 40400, ...)
with the stable error code in ``error`` and the same HTTP status on the response, so
old clients that only read ``code`` and new ones that read the status both work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from inventory.api import views
from inventory.api.bodies import json_response, read_query
from inventory.api.catalogue import day_schedules, schedule_availability
from inventory.api.context import SERVICES
from inventory.api.models import Day, Id, Request
from inventory.api.problems import request_language
from inventory.api.routing import Routes
from inventory.errors import InventoryError, NotFoundError, title_in

routes = Routes(tag="legacy")


class DoctorScheduleQuery(Request):
    deptId: Id  # the brief's parameter name
    date: Day


class AvailableQuery(Request):
    scheduleId: Id  # the brief's parameter name


def envelope(data: Any) -> web.Response:
    return json_response({"code": 0, "message": "ok", "data": data})


async def _enveloped(request: web.Request, call: Callable[[], Awaitable[Any]]) -> web.Response:
    try:
        return envelope(await call())
    except InventoryError as error:
        # The same code and language rules as problem+json (every 404 is not_found).
        code = NotFoundError.code if error.http_status == 404 else error.code
        body: dict[str, Any] = {
            "code": error.http_status * 100,
            "message": title_in(code, request_language(request)),
            "error": code,
            "data": None,
        }
        if "errors" in error.context:
            body["errors"] = error.context["errors"]
        return json_response(body, status=error.http_status)


@routes.get(
    "/api/doctor/schedule",
    operation_id="legacy_doctor_schedule",
    summary="Legacy: schedules of a department on a date",
    response=views.LegacySchedules,
    query=DoctorScheduleQuery,
    errors=(404, 422, 503),
    error_body=views.LegacyError,
)
async def doctor_schedule(request: web.Request) -> web.Response:
    """Schedules of a department on a date (legacy envelope)."""

    async def call() -> Any:
        query = read_query(request, DoctorScheduleQuery)
        return await day_schedules(request.app[SERVICES], query.deptId, query.date)

    return await _enveloped(request, call)


@routes.get(
    "/api/appointment/available",
    operation_id="legacy_appointment_available",
    summary="Legacy: a schedule's slots with remaining counts",
    response=views.LegacyAvailability,
    query=AvailableQuery,
    errors=(404, 422, 503),
    error_body=views.LegacyError,
)
async def appointment_available(request: web.Request) -> web.Response:
    """A schedule's slots with remaining counts (legacy envelope)."""

    async def call() -> Any:
        query = read_query(request, AvailableQuery)
        found = await schedule_availability(request.app[SERVICES], query.scheduleId)
        if found is None:
            raise NotFoundError("no such schedule")
        return found

    return await _enveloped(request, call)
