"""RFC 9457 problem details: the one place errors become HTTP responses.

Every error answer is ``application/problem+json`` with a stable ``code`` (the
store's refusal codes and the edge's validation codes), the HTTP status, a ``title`` a
front end can show and, for validation, which field failed and why. No input produces
a 500: an unexpected exception is logged with its request id and answered as a
generic ``internal_error`` problem without details.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from inventory.domain import Hold
from inventory.errors import InventoryError, RateLimitedError

log = structlog.get_logger(__name__)

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "https://slot-inventory.dev/problems/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Context entries that may be shown to the caller (others stay in logs only).
_PUBLIC_CONTEXT = frozenset(
    {"rule", "errors", "release_ms", "deadline_ms", "state", "retry_after_s", "banned_until_ms"}
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


def problem_response(
    status: int, code: str, title: str, *, detail: str | None = None, **extra: Any
) -> web.Response:
    """A problem+json response."""
    body: dict[str, Any] = {"type": TYPE_BASE + code, "title": title, "status": status}
    body["code"] = code
    if detail and detail != title:
        body["detail"] = detail
    body.update(extra)
    headers = {}
    if "retry_after_s" in extra:
        headers["Retry-After"] = str(extra["retry_after_s"])
    return web.Response(
        status=status,
        body=orjson.dumps(body, default=_json_default),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def error_response(error: InventoryError) -> web.Response:
    """The problem+json answer for a domain or edge error."""
    extra = {k: v for k, v in error.context.items() if k in _PUBLIC_CONTEXT}
    if isinstance(error, RateLimitedError) or error.http_status == 503:
        extra.setdefault("retry_after_s", 1)
    return problem_response(
        error.http_status, error.code, error.title, detail=error.detail, **extra
    )


def problem_for(error: Exception, request: web.Request) -> web.Response:
    """The problem+json answer for an exception a handler raised (call it from the
    ``except`` block: an unexpected error is logged with its traceback and answered
    500). An HTTP exception below 400 (a redirect, 304) is no error: not for here."""
    if isinstance(error, InventoryError):
        if error.http_status >= 500:
            log.warning("request.unavailable", code=error.code, path=request.path)
        return error_response(error)
    if isinstance(error, web.HTTPException):
        code = _HTTP_CODES.get(error.status, f"http_{error.status}")
        response = problem_response(error.status, code, error.reason)
        if error.status == 405 and "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response
    log.exception("request.failed", path=request.path, method=request.method)
    return problem_response(500, "internal_error", "Internal error")


def hold_not_visible(hold: Hold | None, account_id: str) -> bool:
    """Another account's hold looks exactly like a missing one (no id confirmation)."""
    return hold is None or hold.account_id != account_id
