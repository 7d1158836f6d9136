"""RFC 9457 problem details: the one place errors become HTTP responses.

Every error answer is ``application/problem+json`` with a stable ``code`` (the
store's refusal codes and the edge's validation codes), the HTTP status, a ``title`` a
front end can show and, for validation, which field failed and why. No input produces
a 500: an unexpected exception is logged with its request id and answered as a
generic ``internal_error`` problem without details.

``title`` and ``detail`` are in Chinese unless the request's ``Accept-Language``
prefers English (the code table, ``inventory.errors.MESSAGES``); codes never change
with the language. Every 404 is ``not_found``: a missing id, another account's object
and an id that cannot exist look the same, so an answer never confirms that an id
exists (the store's own 404 refusals, e.g. ``hold_not_found`` after a race, too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
import redis.exceptions
import structlog
from aiohttp import web

from inventory.domain import Hold
from inventory.errors import (
    InventoryError,
    Language,
    NotFoundError,
    RateLimitedError,
    detail_in,
    language_of,
    title_in,
)
from inventory.store.slot_store import store_error

log = structlog.get_logger(__name__)

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://slot-inventory.dev/problems/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Context entries that may be shown to the caller (others stay in logs only).
_PUBLIC_CONTEXT = frozenset(
    {
        "rule",
        "errors",
        "release_ms",
        "deadline_ms",
        "state",
        "retry_after_s",
        "banned_until_ms",
        "limit",
        "release_id",
        "opens_ms",
        "waitlist",
        "fee_fen",
    }
)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError


_CONTENT_LANGUAGE = {"zh": "zh-CN", "en": "en"}


def request_language(request: web.Request) -> Language:
    """The language of the request's answers (``Accept-Language``; Chinese by default)."""
    return language_of(request.headers.get("Accept-Language"))


def problem_response(
    status: int,
    code: str,
    title: str,
    *,
    detail: str | None = None,
    language: Language | None = None,
    **extra: Any,
) -> web.Response:
    """A problem+json response (``language``: the language title and detail are in)."""
    body: dict[str, Any] = {"type": TYPE_BASE + code, "title": title, "status": status}
    body["code"] = code
    if detail and detail != title:
        body["detail"] = detail
    body.update(extra)
    headers = {}
    if language is not None:
        headers["Content-Language"] = _CONTENT_LANGUAGE[language]
        headers["Vary"] = "Accept-Language"
    if "retry_after_s" in extra:
        headers["Retry-After"] = str(extra["retry_after_s"])
    return web.Response(
        status=status,
        body=orjson.dumps(body, default=_json_default),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def error_response(error: InventoryError, language: Language = "zh") -> web.Response:
    """The problem+json answer for a domain or edge error, in ``language``."""
    extra = {k: v for k, v in error.context.items() if k in _PUBLIC_CONTEXT}
    if isinstance(error, RateLimitedError) or error.http_status == 503:
        extra.setdefault("retry_after_s", 1)
    code = NotFoundError.code if error.http_status == 404 else error.code
    # A detail of its own (not the class's title) is shown in the answer's language.
    detail = None if error.detail == type(error).title else detail_in(error.detail, language)
    return problem_response(
        error.http_status,
        code,
        title_in(code, language),
        detail=detail,
        language=language,
        **extra,
    )


def problem_for(error: Exception, request: web.Request) -> web.Response:
    """The problem+json answer for an exception a handler raised (call it from the
    ``except`` block: an unexpected error is logged with its traceback and answered
    500). An HTTP exception below 400 (a redirect, 304) is no error: not for here."""
    language = request_language(request)
    if isinstance(error, (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)):
        # A Redis call made outside the store's own wrapping: an unreachable node or a
        # Cluster that is down is a 503 with Retry-After here too, never a 500.
        error = store_error(error)
    if isinstance(error, InventoryError):
        if error.http_status >= 500:
            # What failed below (the driver's exception class and the error's own line,
            # which names no credentials): an SRE reading 503s needs the why.
            cause = error.__cause__
            log.warning(
                "request.unavailable",
                code=error.code,
                path=request.path,
                reason=str(error),
                cause=type(cause).__name__ if cause is not None else None,
            )
        return error_response(error, language)
    if isinstance(error, web.HTTPException):
        code = _HTTP_CODES.get(error.status, f"http_{error.status}")
        response = problem_response(error.status, code, title_in(code, language), language=language)
        if error.status == 405 and "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    log.exception("request.failed", path=request.path, method=request.method)
    return problem_response(
        500, "internal_error", title_in("internal_error", language), language=language
    )


def hold_not_visible(hold: Hold | None, account_id: str) -> bool:
    """Another account's hold looks exactly like a missing one (no id confirmation)."""
    return hold is None or hold.account_id != account_id
