"""Spike protection per process: a bounded number of requests in flight.

Past the bound a request is answered at once with 503 and ``Retry-After`` instead of
queueing: under a release storm a fast "come back later" keeps latency bounded for the
requests being served and lets the process recover, where an unbounded queue would
collapse it. Health, readiness and metrics are never shed.

The ``Retry-After`` is drawn at random for every refusal, from ``retry_after_s`` up to
a bound that grows with how many requests the process shed per request it answered in
the last second (at most ``retry_after_max_s``). A fixed value sends every shed client
back in the same second, a wave as large as the crowd against a process that answers a
fraction of it; spread over a window about as many seconds wide as the crowd is larger
than the process's answer rate, the clients come back at about the rate it can answer.

A reserve that carries a waiting room's admission token is not shed by this bound: the
room admitted its patient in queue order, as fast as units can be taken, and a 503
here would let later patients take the units first (the room's promise is that an
admitted patient is never overtaken). The room already meters those reserves (at most
the units free plus those due back, times the over-admission factor), so they are
counted in a lane of their own (:attr:`AdmissionGate.lane`), bounded at
``ADMITTED_LANE_FACTOR`` times the bound only against a flood of forged tokens. A
reserve arriving past the bound is let in until its body says whether it carries a
token (:func:`admit_reserve`); one without is shed then.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Final

from aiohttp import web

from inventory.errors import OverloadedError
from inventory.ops import metrics

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Where the edge keeps the gate a request was counted in by (None once it left).
GATE_KEY: Final = web.RequestKey["AdmissionGate | None"]("admission_gate")
#: Where the edge keeps the gate of a reserve let in past its bound, to be decided by
#: :func:`admit_reserve` once its body is read.
PENDING_KEY: Final = web.RequestKey["AdmissionGate | None"]("admission_pending")
#: The route whose requests may carry an admission token.
RESERVE_ROUTE: Final = ("POST", "/v1/holds")
#: The admitted reserves' lane is bounded at this many times the gate's bound.
ADMITTED_LANE_FACTOR: Final = 4


def admit_reserve(request: web.Request, *, admission_token: str) -> None:
    """Once a reserve's body is read: one carrying an admission token moves to the
    admitted lane (see the module's docstring); one without, let in past the bound,
    is shed now (:class:`OverloadedError`). A forged token gains nothing but a place
    in the lane: the reserve script refuses it."""
    pending = request.get(PENDING_KEY)
    if not admission_token:
        if isinstance(pending, AdmissionGate):
            request[PENDING_KEY] = None
            raise pending.refusal()
        return
    counted = request.get(GATE_KEY)
    gate = counted if isinstance(counted, AdmissionGate) else pending
    lane = gate.lane if isinstance(gate, AdmissionGate) else None
    if lane is None:
        return  # not counted (a test's app), or counted in the lane already
    if lane.in_flight >= lane.limit:
        raise lane.refusal()
    if isinstance(counted, AdmissionGate):  # counted in the gate: it moves from there
        counted.in_flight -= 1  # not an answer (leave() would count one)
    request[PENDING_KEY] = None
    lane.in_flight += 1
    request[GATE_KEY] = lane


def detach(request: web.Request) -> None:
    """The request now only waits (a status stream, a long-poll): it leaves the count of
    requests in flight, which bounds work, not waiting. Without this a crowd's status
    streams would fill the bound and every other request would be shed."""
    gate = request.get(GATE_KEY)
    if isinstance(gate, AdmissionGate):
        request[GATE_KEY] = None
        gate.leave()


class AdmissionGate:
    """Counts requests in flight; refuses beyond ``limit``, with a jittered
    ``Retry-After`` that grows with the shed rate (see the module's docstring)."""

    def __init__(
        self,
        limit: int,
        *,
        retry_after_s: int = 1,
        retry_after_max_s: int = 30,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        lane_factor: int = ADMITTED_LANE_FACTOR,
    ) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.retry_after_max_s = max(retry_after_max_s, retry_after_s)
        self.in_flight = 0
        self.shed_total = 0
        self._clock = clock
        self._rng = rng or random.Random()
        # Requests shed and answered in the current whole second of the clock, and in
        # the one before it: the shed rate over the last second without a timer.
        self._second = 0
        self._shed = [0, 0]
        self._answered = [0, 0]
        #: The admitted reserves' lane (None for a lane itself: ``lane_factor=0``).
        self.lane: AdmissionGate | None = (
            AdmissionGate(
                limit * lane_factor,
                retry_after_s=retry_after_s,
                retry_after_max_s=retry_after_max_s,
                clock=clock,
                rng=self._rng,
                lane_factor=0,
            )
            if lane_factor
            else None
        )

    def _roll(self) -> None:
        second = int(self._clock())
        if second != self._second:
            if second == self._second + 1:
                self._shed = [self._shed[1], 0]
                self._answered = [self._answered[1], 0]
            else:
                self._shed, self._answered = [0, 0], [0, 0]
            self._second = second

    @property
    def total_in_flight(self) -> int:
        """Requests in flight, the admitted lane's included."""
        return self.in_flight + (self.lane.in_flight if self.lane is not None else 0)

    def admit(self, path: str, method: str = "GET") -> bool | None:
        """Count a request in (True), or refuse it with ``overloaded`` (503); health,
        readiness and metrics are never refused nor counted (False). A reserve past
        the bound is neither (None): :func:`admit_reserve` decides once its body says
        whether it carries an admission token."""
        if path in EXEMPT_PATHS:
            return False
        if self.in_flight >= self.limit:
            if (method, path) == RESERVE_ROUTE:
                return None
            raise self.refusal()
        self.in_flight += 1
        return True

    def refusal(self) -> OverloadedError:
        """Count one request shed; the error to answer it with."""
        self.shed_total += 1
        metrics.ADMISSION_SHED.inc()
        return OverloadedError(retry_after_s=self.retry_after())

    def leave(self) -> None:
        """A request counted in by :meth:`admit` is answered."""
        self.in_flight -= 1
        self._roll()
        self._answered[1] += 1

    def retry_after(self) -> int:
        """Count one refusal and draw its ``Retry-After``: uniform over whole seconds
        from ``retry_after_s`` to ``retry_after_s * (1 + shed / answered)`` over the
        last second, at most ``retry_after_max_s``."""
        self._roll()
        self._shed[1] += 1
        shed = max(self._shed)
        answered = max(max(self._answered), 1)
        upper = self.retry_after_s + math.ceil(self.retry_after_s * shed / answered)
        return self._rng.randint(self.retry_after_s, min(upper, self.retry_after_max_s))
