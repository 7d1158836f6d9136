"""Request telemetry: a request id on every request, its latency and status by route,
the reserve outcomes, ``/metrics``, and one JSON access-log line per request (the
pieces; :mod:`inventory.api.edge` applies them to every request).

The request id comes from ``X-Request-Id`` when the caller sends a sane one (1-128 of
``A-Z a-z 0-9 . _ : -``, no personal data), else a fresh one is made; it is echoed in
every answer and bound to structlog's context variables, so every log line written
while the request is handled carries it (aiohttp runs each request in its own task,
which has its own copy of the context).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from inventory.api.context import SERVICES
from inventory.api.routing import Routes
from inventory.errors import InventoryError
from inventory.ops import metrics
from inventory.ops.logs import write_access
from inventory.ops.tasks import cancel_and_wait
from inventory.privacy.identity import find_pii

log = structlog.get_logger("inventory.api.access")

routes = Routes(tag="health")

REQUEST_ID_HEADER: Final = "X-Request-Id"
_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
#: Probes and scrapes: logged at debug level only, so they do not drown the access log.
QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
#: How often each API process refreshes its own gauges (in flight, store verified).
PROCESS_SAMPLE_S: Final = 1.0


#: Hex digits to letters: a generated request id has no digits at all.
_HEX_TO_LETTERS: Final = bytes.maketrans(b"0123456789abcdef", b"abcdefghijklmnop")
#: Where the request id is kept on the request, for handlers that stamp it on events.
REQUEST_ID_KEY: Final = web.RequestKey("request_id", str)


#: Request ids are correlation ids, not secrets (they are echoed and logged): drawn from
#: a per-process generator seeded from the OS, because a system call per request for
#: them (``secrets``) cost far more under load than its microbenchmark suggests
#: (docs/benchmarks.md).
_ids = random.Random()


def new_request_id() -> str:
    """30 letters ``a-p`` (120 random bits). With no digits at all, no part of it can be
    an ID number or a mobile number: the id is safe to log unmasked (a hex id would look
    like a phone number now and then). Hex then translated as bytes: C speed, unlike
    base32 or ``str.translate``."""
    return _ids.randbytes(15).hex().encode().translate(_HEX_TO_LETTERS).decode()


def request_id_from(request: web.Request) -> str:
    """The caller's request id when it is sane, else a new one."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    if offered and _REQUEST_ID_RE.fullmatch(offered) and not find_pii(offered):
        return offered
    return new_request_id()


def request_id_of(request: web.Request) -> str:
    """The id the telemetry middleware gave ``request`` ("" before it ran)."""
    value = request.get(REQUEST_ID_KEY, "")
    return value if isinstance(value, str) else ""


def route_template(request: web.Request) -> str:
    """The matched route's path template (``/v1/holds/{hold_id}``), or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else metrics.UNMATCHED


def log_answer(request: web.Request, route: str, status: int, seconds: float) -> None:
    """The access-log line of one answered request (debug level for probes and scrapes)."""
    method, path, duration_ms = request.method, request.path, round(seconds * 1000, 3)
    if path not in QUIET_PATHS and write_access(
        request_id_of(request), method, route, path, status, duration_ms
    ):
        return
    fields = {
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
    }
    if path in QUIET_PATHS:
        log.debug("http.request", **fields)
    else:
        log.info("http.request", **fields)


def reserve_failure(error: Exception) -> str:
    """The reserve outcome an error is counted as (its stable code, ``http_<status>``
    or ``internal_error``)."""
    if isinstance(error, InventoryError):
        return error.code
    if isinstance(error, web.HTTPException):
        return f"http_{error.status}"
    return "internal_error"


@routes.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics of every API process (text format; see docs/metrics.md)",
    response={"type": "string"},
    content_types=("text/plain",),
)
async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus metrics of every API process (text format)."""
    body = await asyncio.to_thread(metrics.exposition, "api")
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def sample_process(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: keep this process's gauges current (after the services start)."""

    async def loop() -> None:
        services = app[SERVICES]
        while True:
            metrics.HTTP_IN_FLIGHT.set(services.gate.total_in_flight)
            metrics.STORE_VERIFIED.set(1 if services.verification.verified else 0)
            await asyncio.sleep(PROCESS_SAMPLE_S)

    task = asyncio.create_task(loop(), name="metrics-sampler")
    try:
        yield
    finally:
        await cancel_and_wait(task)
