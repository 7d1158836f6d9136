"""Liveness and readiness.

``/healthz``: the process is alive and its loop turns. ``/readyz``: it can serve
reserves and confirms: Redis and Postgres answer, the store is verified (the fence),
and the outbox backlog is within ``INVENTORY_READY_MAX_OUTBOX_BACKLOG``. On Redis
Cluster "Redis answers" means every primary of the slot map answers and reports
``cluster_state:ok``, and "verified" means every primary's current run id is (a node
answering PING says nothing of a cluster that is down). The API runs no persister, so
it measures the backlog from Redis itself (inventory/store/backlog.py), at most every couple
of seconds; a figure older than that (measuring is slow) is served marked with its age.
Each check says what is wrong in the body; each waits at most :data:`CHECK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from inventory.api import views
from inventory.api.bodies import json_response
from inventory.api.context import SERVICES, Services
from inventory.api.routing import Routes
from inventory.record.persister import GROUP
from inventory.record.pool import ping
from inventory.store.backlog import measure_backlog, outbox_verdict, stale_remark
from inventory.store.connection import check_store

routes = Routes(tag="health")

CHECK_TIMEOUT_S = 1.0


@routes.get(
    "/healthz",
    operation_id="healthz",
    summary="The process lives",
    response=views.Health,
)
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
    verdict = outbox_verdict(backlog.entries, bound, backlog.oldest_age_s)
    # The last figure, served while a slow measurement goes on: said, not hidden.
    cache = services.outbox_backlog
    return "outbox", verdict + stale_remark(cache.age_s(), cache.max_age_s + CHECK_TIMEOUT_S)


def _store(services: Services) -> tuple[str, str]:
    verification = services.verification
    if verification.verified:
        return "store", "ok"
    nodes = verification.unverified_nodes()
    which = f" ({', '.join(nodes)})" if verification.cluster and nodes else ""
    return "store", f"unverified{which}: waiting for the fence check"


def _passes(state: str) -> bool:
    """A check passes when "ok", also with a remark (a stale backlog figure)."""
    return state == "ok" or state.startswith("ok (")


@routes.get(
    "/readyz",
    operation_id="readyz",
    summary="Ready to serve (Redis and Postgres answer, store verified, outbox backlog in bounds)",
    response=views.Readiness,
    extra_ok=(503,),
)
async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis and Postgres answer, the store is verified and the outbox
    backlog is within bounds; 503 with what is failing otherwise."""
    services = request.app[SERVICES]
    checks = dict(
        await asyncio.gather(
            _check("redis", check_store(services.store.client)),
            _check("postgres", ping(services.db)),
            _outbox(services),
        )
    )
    checks.update([_store(services)])
    ready = all(_passes(state) for state in checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )
