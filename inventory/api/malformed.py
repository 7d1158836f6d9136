"""Requests aiohttp cannot parse (a NUL in a header, ``Content-Length: abc``, a bad
request line) answered like every other error: problem+json with a stable code and a
request id.

aiohttp's HTTP parser refuses such a request before any middleware runs and answers
with its protocol's ``handle_error``: a text/plain 400 whose body is the parser's
message, which quotes the offending bytes back (a header may carry a token or personal
data). aiohttp has no hook for it (its issue 3287 asks for one) other than that method
of the protocol class each connection gets from the server, so the API's server
(inventory/api/server.py) hands out :class:`ProblemRequestHandler` instead (overriding
``handle_error``; tests/api/test_malformed_http.py notices if aiohttp changes this).
Nothing of the request is echoed, nor logged: the log line has the request id, the
status and the parser's error class.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from inventory.api.observability import REQUEST_ID_HEADER, REQUEST_ID_KEY, new_request_id
from inventory.api.problems import problem_response
from inventory.errors import title_in

log = structlog.get_logger("inventory.api.access")

_CODES = {400: "bad_request", 413: "body_too_large"}


class ProblemRequestHandler(RequestHandler):
    """aiohttp's HTTP protocol, answering its own errors with problem+json."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request the parser refused (or, at 500, one whose handling
        failed outside the app's middleware); the connection is closed after it."""
        known = request.get(REQUEST_ID_KEY)
        request_id = known if isinstance(known, str) and known else new_request_id()
        error = type(exc).__name__ if exc is not None else ""
        if status >= 500:
            log.error("http.request_failed", request_id=request_id, status=status, error=error)
        else:
            # The parser's message quotes the request's bytes: never logged.
            log.info("http.malformed_request", request_id=request_id, status=status, error=error)
        if request.writer.output_size > 0:
            # Part of an answer is out: another one cannot follow (aiohttp's own rule).
            raise ConnectionError("the answer had started; the connection is dropped")
        code = "internal_error" if status >= 500 else _CODES.get(status, f"http_{status}")
        # A request that could not be parsed has no Accept-Language: the default, zh-CN.
        response = problem_response(status, code, title_in(code, "zh"), language="zh")
        response.headers[REQUEST_ID_HEADER] = request_id
        response.force_close()
        return response
