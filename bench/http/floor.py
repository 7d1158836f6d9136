"""The floor of ``python -m bench http --floor``: the bare handler plus the reserve call.

A reserve cannot cost less than the bare JSON POST handler plus the store call it makes.
This server is exactly that: the bare handler of :mod:`bench.http.bare_server` (orjson in
and out, no middleware) around the API's own ``SlotStore.reserve``, built by the API's
own ``services_context`` from the same ``INVENTORY_*`` environment (same scripts, same
auto-pipelined Redis connection, same catalogue cache). It does nothing else: no token,
no body validation, no rate limits, no idempotency-key checks, no metrics, no access log,
no admission gate. Its throughput against the bare handler is what this machine allows
*any* handler that reserves through this store; the API's own handling is the
difference between the API and the floor.

Run by the benchmark as ``python -m bench.http.child floor --port P``; it books each
request's patient under the account ``floor-<patient>`` (the bearer token is not read),
on request indices of its own, so its holds never meet the API's.
"""

from __future__ import annotations

import asyncio
import signal

import orjson
import uvloop
from aiohttp import web

from inventory.api.admission import AdmissionGate
from inventory.api.context import SERVICES
from inventory.api.holds import hold_view
from inventory.app import GATE, SETTINGS, services_context
from inventory.domain import ReserveRequest
from inventory.errors import InventoryError
from inventory.ops.config import Settings
from inventory.ops.gc_tuning import tune_garbage_collector

#: Prefix of the accounts the floor books under (it reads no token); the store takes
#: account ids of at most 64 letters, digits, "_" or "-".
FLOOR_ACCOUNT_PREFIX = "floor-"


async def _reserve(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    services = request.app[SERVICES]
    slot_id, patient_id = body["slot_id"], body["patient_id"]
    location = services.catalogue.known_slot_location(slot_id)
    if location is None:
        location = await services.catalogue.slot_location(slot_id)
        if location is None:
            raise web.HTTPNotFound()
    try:
        outcome = await services.store.reserve(
            ReserveRequest(
                hospital_id=location.hospital_id,
                department_id=location.department_id,
                visit_date=location.visit_date,
                slot_id=slot_id,
                account_id=(FLOOR_ACCOUNT_PREFIX + patient_id)[:64],
                patient_id=patient_id,
                channel=body["channel"],
                idempotency_key=request.headers["Idempotency-Key"],
            )
        )
    except InventoryError as refused:
        # A refusal (e.g. a run past its request budget) is an error the benchmark counts,
        # answered with the store's code rather than a logged traceback.
        return web.Response(status=refused.http_status, text=refused.code)
    # The same view as the API's (in the hospital's zone, with the cancel deadline).
    terms = services.catalogue.known_terms(location.schedule_id) or await services.catalogue.terms(
        location.schedule_id
    )
    if terms is None:
        raise web.HTTPNotFound()
    return web.Response(
        status=201,
        body=orjson.dumps(hold_view(outcome.hold, terms)),
        content_type="application/json",
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def floor_app(settings: Settings) -> web.Application:
    """``POST /v1/holds`` (the bare handler plus the store's reserve) and ``GET /healthz``."""
    app = web.Application()
    app[SETTINGS] = settings
    # The API's services expect the process's admission gate; the floor never uses it.
    app[GATE] = AdmissionGate(settings.max_in_flight, retry_after_s=settings.retry_after_s)
    app.cleanup_ctx.append(services_context)
    app.router.add_post("/v1/holds", _reserve)
    app.router.add_get("/healthz", _healthz)
    return app


def serve_floor(host: str, port: int, *, reuse_port: bool) -> None:
    """Serve the floor until SIGTERM or SIGINT (settings from ``INVENTORY_*``)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(floor_app(Settings.from_env()), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096).start()
        # As `inventory serve` does for the API, so the two are compared alike.
        tune_garbage_collector()
        await stop.wait()
        await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
