"""The one middleware every API request passes, in this order: a request id and its
telemetry (latency and status by route, the access-log line; observability), the
admission gate (admission), and problem+json for every error (problems).

One coroutine frame instead of one per concern: a request's task resumes through
every frame of its chain at each await, and under load each layer cost a reserve
measurable CPU (docs/benchmarks.md), so the concerns live in their modules and meet only
here.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from inventory.api.admission import GATE_KEY, PENDING_KEY, AdmissionGate
from inventory.api.observability import (
    REQUEST_ID_HEADER,
    REQUEST_ID_KEY,
    log_answer,
    request_id_from,
    route_template,
)
from inventory.api.problems import Handler, problem_for
from inventory.ops import metrics

log = structlog.get_logger("inventory.api.access")


def edge_middleware(gate: AdmissionGate, *, access_log: bool = True) -> Middleware:
    """Request id, admission, problem+json, latency by route and status, and
    (``access_log``) the access-log line of every request."""

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request_id_from(request)
        request[REQUEST_ID_KEY] = request_id
        started = time.perf_counter()
        # aiohttp runs each request in a task of its own, with its own copy of the
        # context: binding here and resetting in ``finally`` cannot leak into another
        # request (and is much cheaper than structlog's bound_contextvars, which
        # snapshots every variable).
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        try:
            try:
                counted = gate.admit(request.path, request.method)
                if counted:
                    request[GATE_KEY] = gate
                elif counted is None:  # a reserve past the bound: its body decides
                    request[PENDING_KEY] = gate
                try:
                    response = await handler(request)
                finally:
                    # The gate or lane it is counted in now; none when the handler
                    # detached the request (admission.detach).
                    counted_in = request.get(GATE_KEY)
                    if counted_in is not None:
                        counted_in.leave()
            except asyncio.CancelledError:
                log.info("http.request_cancelled", method=request.method, path=request.path)
                raise
            except Exception as error:  # every error is answered with problem+json
                if isinstance(error, web.HTTPException) and error.status < 400:
                    # A redirect or 304: not an error, it travels on as an exception.
                    status = error.status
                    error.headers[REQUEST_ID_HEADER] = request_id
                    raise
                response = problem_for(error, request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            seconds = time.perf_counter() - started
            route = route_template(request)
            metrics.observe_request(request.method, route, status, seconds)
            if access_log:
                log_answer(request, route, status, seconds)
            structlog.contextvars.reset_contextvars(**tokens)

    return edge
