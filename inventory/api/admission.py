"""Spike protection per process: a bounded number of requests in flight.

Past the bound a request is answered at once with 503 and ``Retry-After`` instead of
queueing: under a release storm a fast "come back in a second" keeps latency bounded
for the requests being served and lets the process recover, where an unbounded queue
would collapse it. Health, readiness and metrics are never shed.
"""

from __future__ import annotations

from inventory import metrics
from inventory.errors import OverloadedError

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AdmissionGate:
    """Counts requests in flight; refuses beyond ``limit``."""

    def __init__(self, limit: int, *, retry_after_s: int = 1) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.shed_total = 0

    def admit(self, path: str) -> bool:
        """Count a request in (True), or refuse it with ``overloaded`` (503); health,
        readiness and metrics are never refused nor counted (False)."""
        if path in EXEMPT_PATHS:
            return False
        if self.in_flight >= self.limit:
            self.shed_total += 1
            metrics.ADMISSION_SHED.inc()
            raise OverloadedError(retry_after_s=self.retry_after_s)
        self.in_flight += 1
        return True

    def leave(self) -> None:
        """A request counted in by :meth:`admit` is answered."""
        self.in_flight -= 1
