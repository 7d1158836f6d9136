"""``Idempotency-Key`` on the mutating routes that are not a reserve, recorded in
Postgres (``idempotency_keys``, docs/schema.md).

A reserve keeps its key in Redis, inside the script that makes the hold, atomically with
it. Every other mutating route (``ROUTES``: declared ``idempotency="recorded"``) takes an
optional key, handled here, by a wrapper the app puts around exactly those routes'
handlers (:func:`recording`), so no handler changes and no other request passes through
it (a middleware frame on every request, the reserve's too, cost CPU under load:
docs/benchmarks.md):

* the first request with a key claims it (``INSERT ... ON CONFLICT DO NOTHING``), runs,
  and stores its answer when that answer is not a server error;
* a retry with the same key and the same request (method, path and body; the JSON body
  compared with sorted keys) gets the stored answer again, marked
  ``Idempotent-Replayed: true``, and nothing runs twice;
* the same key with a different request is refused, ``idempotency_key_reused`` (as a
  reserve's);
* a retry while the first request still runs waits for its answer (up to ``WAIT_S``),
  then 409 ``idempotency_key_in_use`` with Retry-After;
* a request that ends in an error (a refusal, Postgres down, a crash of the handler)
  drops its claim, so its retry runs again: refusals are answered by the state, not by
  the record. A claim left behind by a process that died is taken over after
  ``ABANDONED_S``.

Keys are per account (the token's subject); records are kept at least 24 hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Iterable
from typing import Any, Final

import orjson
import structlog
from aiohttp import web

from inventory.api.auth import principal
from inventory.api.bodies import MAX_BODY_BYTES
from inventory.api.context import SERVICES
from inventory.api.problems import Handler
from inventory.api.routes import OPERATIONS
from inventory.errors import (
    BadRequestError,
    IdempotencyKeyInUseError,
    IdempotencyKeyRequiredError,
    IdempotencyKeyReusedError,
)
from inventory.ops.backoff import TRANSIENT_ERRORS
from inventory.record import idempotency as record

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
#: Routes (method, path template) whose key is recorded here: those declared
#: ``idempotency="recorded"`` (``inventory.api.routing``).
ROUTES: Final = frozenset(
    (op.method.upper(), op.path) for op in OPERATIONS if op.idempotency == "recorded"
)
#: How long a retry waits for the first request's answer before 409.
WAIT_S: Final = 10.0
#: A claim this old without an answer belongs to a process that died: taken over.
ABANDONED_S: Final = 120.0
_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,64}")

log = structlog.get_logger(__name__)


def digest_of(method: str, path: str, raw: bytes) -> str:
    """A request's fingerprint: method, path and body (JSON with sorted keys, so a
    client's serialiser does not matter; other bytes as they are)."""
    try:
        body = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS) if raw else b""
    except orjson.JSONDecodeError:
        body = raw  # the handler refuses it; a retry must still send the same bytes
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


async def fingerprint(request: web.Request) -> str:
    """The fingerprint of ``request`` (see :func:`digest_of`)."""
    limit = request.app[MAX_BODY_BYTES]
    try:
        raw = await request.read()  # kept by aiohttp: the handler reads it again
    except web.HTTPRequestEntityTooLarge:
        raise BadRequestError(f"the body is larger than {limit} bytes") from None
    return digest_of(request.method, request.path, raw)


def _replay(row: Any) -> web.Response:
    body = row["response_body"]
    return web.Response(
        status=int(row["response_status"]),
        body=orjson.dumps(body) if body is not None else None,
        content_type="application/json" if body is not None else None,
        headers={REPLAYED_HEADER: "true"},
    )


def _recordable(response: web.StreamResponse) -> Any:
    """The JSON body to keep of ``response`` (None: no body), or ``...`` when it is not
    kept (a server error, or an answer that is not JSON)."""
    if not isinstance(response, web.Response) or response.status >= 500:
        return ...
    body = response.body
    if not body:
        return None
    if not isinstance(body, bytes) or response.content_type not in (
        "application/json",
        "application/problem+json",
    ):
        return ...
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return ...


async def _run_once(
    request: web.Request, handler: Handler, account_id: str, key: str, operation: str, digest: str
) -> web.StreamResponse:
    pool = request.app[SERVICES].db
    deadline = time.monotonic() + WAIT_S
    pause = 0.02
    while True:
        claimed, row = await record.claim(pool, account_id, key, operation, digest)
        if claimed:
            return await _run_claimed(request, handler, account_id, key)
        if row is None:
            continue  # released between our claim and our read: claim again
        if row["operation"] != operation or row["fingerprint"] != digest:
            raise IdempotencyKeyReusedError()
        if row["response_status"] is not None:
            return _replay(row)
        if await _abandoned(pool, row, account_id, key):
            continue
        if time.monotonic() >= deadline:
            raise IdempotencyKeyInUseError(retry_after_s=1)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


async def _abandoned(pool: Any, row: Any, account_id: str, key: str) -> bool:
    """Drop a claim older than ABANDONED_S that never got an answer; whether it was."""
    return await record.take_over(pool, account_id, key, row["created_at"], ABANDONED_S)


async def _run_claimed(
    request: web.Request, handler: Handler, account_id: str, key: str
) -> web.StreamResponse:
    pool = request.app[SERVICES].db
    try:
        response = await handler(request)
    except BaseException:
        await _release(pool, account_id, key)
        raise
    body = _recordable(response)
    if body is ...:
        await _release(pool, account_id, key)
        return response
    try:
        await record.complete(pool, account_id, key, response.status, body)
    except TRANSIENT_ERRORS as error:
        # The work is done: answer it. The claim stays open, so a retry waits (409),
        # then takes it over after ABANDONED_S and is answered by the state.
        log.warning("idempotency.record_failed", error=f"{type(error).__name__}: {error}")
    return response


async def _release(pool: Any, account_id: str, key: str) -> None:
    """Drop the claim so a retry runs. If Postgres is gone too, the claim is taken over
    after ABANDONED_S."""

    # Shielded: a cancelled request still drops its claim (the cancellation goes on).
    with contextlib.suppress(*TRANSIENT_ERRORS):
        await asyncio.shield(record.release(pool, account_id, key))


def recorded(handler: Handler, operation: str) -> Handler:
    """``handler`` recording and replaying its answers to requests with an
    Idempotency-Key (``operation``: its method and path template, as recorded)."""

    @functools.wraps(handler)
    async def recording_handler(request: web.Request) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        if key is None:
            return await handler(request)
        if not _KEY_RE.fullmatch(key):
            raise IdempotencyKeyRequiredError()
        who = principal(request)
        digest = await fingerprint(request)
        return await _run_once(request, handler, who.account_id, key, operation, digest)

    return recording_handler


def recording(table: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """A route table with the handlers of ``ROUTES`` wrapped by :func:`recorded` (the
    other routes as they are), for the app to add."""
    routes: list[web.AbstractRouteDef] = []
    for route in table:
        if isinstance(route, web.RouteDef) and (route.method, route.path) in ROUTES:
            operation = f"{route.method} {route.path}"
            route = web.RouteDef(
                route.method, route.path, recorded(route.handler, operation), route.kwargs
            )
        routes.append(route)
    return routes
