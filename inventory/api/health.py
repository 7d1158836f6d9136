"""Liveness and readiness.

``/healthz``: the process is alive and its loop turns. ``/readyz``: it can serve
reserves and confirms: Redis and Postgres answer. Each says what is wrong in its body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from inventory.api.bodies import json_response
from inventory.api.context import SERVICES
from inventory.db.pool import ping

routes = web.RouteTableDef()

CHECK_TIMEOUT_S = 1.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process lives."""
    return json_response({"status": "ok"})


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as error:  # a readiness probe reports, never raises
        return name, f"failing: {type(error).__name__}: {error}"[:200]
    return name, "ok"


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis and Postgres answer; 503 with what is failing otherwise."""
    services = request.app[SERVICES]
    checks = dict(
        await asyncio.gather(
            _check("redis", services.store.client.ping()),
            _check("postgres", ping(services.db)),
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
