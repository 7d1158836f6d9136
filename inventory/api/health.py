"""Liveness and readiness.

``/healthz``: the process is alive and its loop turns. ``/readyz``: it can serve
reserves and confirms: Redis and Postgres answer, the store is verified (the fence),
and the outbox backlog is within ``INVENTORY_READY_MAX_OUTBOX_BACKLOG``. The API runs
no persister, so it measures the backlog from Redis itself (inventory/backlog.py), at
most every couple of seconds. Each check says what is wrong in the body; each waits at
most :data:`CHECK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from inventory.api.bodies import json_response
from inventory.api.context import SERVICES, Services
from inventory.backlog import measure_backlog, outbox_verdict
from inventory.db.pool import ping
from inventory.outbox import GROUP

routes = web.RouteTableDef()

CHECK_TIMEOUT_S = 1.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process lives."""
    return json_response({"status": "ok"})


def _failing(error: BaseException) -> str:
    return f"failing: {type(error).__name__}: {error}"[:200]


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as error:  # a readiness probe reports, never raises
        return name, _failing(error)
    return name, "ok"


async def _outbox(services: Services) -> tuple[str, str]:
    try:
        backlog = await services.outbox_backlog.get(
            lambda: measure_backlog(services.store.client, group=GROUP),
            timeout_s=CHECK_TIMEOUT_S,
        )
    except TimeoutError:
        return "outbox", f"failing: backlog not measured within {CHECK_TIMEOUT_S:g} s"
    except Exception as error:  # a readiness probe reports, never raises
        return "outbox", _failing(error)
    bound = services.settings.ready_max_outbox_backlog
    return "outbox", outbox_verdict(backlog.entries, bound, backlog.oldest_age_s)


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis and Postgres answer, the store is verified and the outbox
    backlog is within bounds; 503 with what is failing otherwise."""
    services = request.app[SERVICES]
    checks = dict(
        await asyncio.gather(
            _check("redis", services.store.client.ping()),
            _check("postgres", ping(services.db)),
            _outbox(services),
        )
    )
    checks["store"] = (
        "ok" if services.verification.verified else "unverified: waiting for the fence check"
    )
    ready = all(state == "ok" for state in checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )
