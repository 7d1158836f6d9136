"""Spike protection per process: a bounded number of requests in flight.

Past the bound a request is answered at once with 503 and ``Retry-After`` instead of
queueing: under a release storm a fast "come back in a second" keeps latency bounded
for the requests being served and lets the process recover, where an unbounded queue
would collapse it. Health, readiness and metrics are never shed.
"""

from __future__ import annotations

from aiohttp import web

from inventory import metrics
from inventory.api.problems import Handler
from inventory.errors import OverloadedError

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AdmissionGate:
    """Counts requests in flight; refuses beyond ``limit``."""

    def __init__(self, limit: int, *, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.shed_total = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Admit the request or refuse it with ``overloaded`` (503)."""
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        if self.in_flight >= self.limit:
            self.shed_total += 1
            metrics.ADMISSION_SHED.inc()
            raise OverloadedError(retry_after_s=self.retry_after_s)
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
