"""The operator audit log: every operator action (and every staff action: a check-in)
leaves exactly one entry (who, role, hospital, route, object, before and after, request
id, time), and operators read it back by hospital and time, as JSON or CSV.

An *action* is a call of an operator route that is not a GET (:func:`is_audited`, from
the route declarations, so a new operator route is audited without a line of its own). The app
wraps exactly those handlers (:func:`auditing`), inside the Idempotency-Key wrapper, so
a replayed answer (nothing ran again) adds no entry. The entry is written before the
handler runs: when it cannot be written (Postgres down) the action is refused with 503
and nothing changes, so no action goes unrecorded. Its outcome (status, the hospital
acted on, the object before and after) completes it afterwards; an entry without an
outcome is an action whose process died while it ran. A refused action (a 404 for
another hospital's object, a validation error) is recorded too: attempts matter to an
auditor.

``before`` is what the handler noted with :func:`note_before` (the object as it was,
read before the change); ``after`` is the answer's JSON.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Final

import orjson
import structlog
from aiohttp import web

from inventory.api.auth import ACTED_ON_KEY, principal
from inventory.api.context import SERVICES
from inventory.api.observability import request_id_of
from inventory.api.problems import Handler
from inventory.api.routing import Operation, Routes
from inventory.errors import InventoryError
from inventory.record import audit as record

log = structlog.get_logger(__name__)


def is_audited(operation: Operation) -> bool:
    """Whether calls of ``operation`` are audited: every operator and staff route but
    GETs (staff routes change bookings too: a check-in)."""
    return operation.auth in ("operator", "staff") and operation.method != "get"


#: Where a handler notes the object as it was before its change.
BEFORE_KEY: Final = web.RequestKey[Any]("audit_before")
#: The status recorded for an action whose client went away while it ran (nginx's).
CLIENT_CLOSED: Final = 499


def note_before(request: web.Request, state: Any) -> None:
    """Record ``state`` (JSON-able: the object as it was) as the entry's ``before``."""
    request[BEFORE_KEY] = state


#: The most characters of a path parameter kept (the route refuses an id longer than 64).
_KEPT_CHARS: Final = 200


def _object_of(request: web.Request) -> dict[str, str]:
    """The path parameters as given (the route has not checked them yet), in what
    ``jsonb`` stores: no NUL character, and not longer than an auditor needs."""
    return {
        name: value[:_KEPT_CHARS].replace("\x00", "\ufffd")
        for name, value in request.match_info.items()
    }


def _status_of(error: BaseException) -> int:
    if isinstance(error, InventoryError):
        return error.http_status
    if isinstance(error, web.HTTPException):
        return error.status
    if isinstance(error, asyncio.CancelledError):
        return CLIENT_CLOSED
    return 500


def _json_of(response: web.StreamResponse) -> Any:
    if isinstance(response, web.Response) and response.content_type == "application/json":
        body = response.body
        if isinstance(body, bytes) and body:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                return None
    return None


def audited(handler: Handler, route: str, *, staff: bool = False) -> Handler:
    """``handler`` leaving one audit entry per call (``route``: its method and path
    template; ``staff``: a staff route, which staff tokens may call too)."""
    method, _, path = route.partition(" ")

    @functools.wraps(handler)
    async def auditing_handler(request: web.Request) -> web.StreamResponse:
        # 401/403 before anything is written: an unauthenticated caller leaves no entry.
        who = principal(request, operator=not staff, staff=staff)
        pool = request.app[SERVICES].db
        entry = await record.begin(
            pool,
            record.AuditStart(
                actor=who.account_id,
                role=who.role,
                scope=None if who.hospitals is None else sorted(who.hospitals),
                method=method,
                route=path,
                object=_object_of(request),
                request_id=request_id_of(request),
            ),
        )
        status, after = 500, None
        try:
            response = await handler(request)
            status, after = response.status, _json_of(response)
            return response
        except BaseException as error:
            status = _status_of(error)
            raise
        finally:
            await _finish(request, entry, status, after)

    return auditing_handler


async def _finish(request: web.Request, entry: int, status: int, after: Any) -> None:
    acted_on = request.get(ACTED_ON_KEY)
    try:
        await record.finish(
            request.app[SERVICES].db,
            entry,
            status=status,
            hospital_id=acted_on if isinstance(acted_on, str) else None,
            before=request.get(BEFORE_KEY),
            after=after,
        )
    except Exception:
        # The action is done (or refused); its entry stays, without an outcome, which
        # is how an auditor sees an action whose process died. Not the caller's error.
        log.exception("audit.finish_failed", entry=entry)


def auditing(table: Routes) -> list[web.AbstractRouteDef]:
    """A route table with the handlers of its audited operations (:func:`is_audited`)
    wrapped by :func:`audited` (the other routes as they are), for the app to add."""
    audited_routes = {
        (op.method.upper(), op.path): op.auth for op in table.operations if is_audited(op)
    }
    routes: list[web.AbstractRouteDef] = []
    for route in table:
        if isinstance(route, web.RouteDef) and (route.method, route.path) in audited_routes:
            auth = audited_routes[(route.method, route.path)]
            route = web.RouteDef(
                route.method,
                route.path,
                audited(route.handler, f"{route.method} {route.path}", staff=auth == "staff"),
                route.kwargs,
            )
        routes.append(route)
    return routes
