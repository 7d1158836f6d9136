"""What keeps the HIS safe from us and us from a sick HIS: a circuit breaker, a token
bucket, and full-jitter back-off. Pure asyncio, clocks injectable for tests."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from enum import StrEnum

from inventory.his.errors import HisCircuitOpenError, HisUnavailableError

Clock = Callable[[], float]


class BreakerState(StrEnum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"  #: calls go through; failures are counted
    OPEN = "open"  #: calls fail at once, until the cool-down is over
    HALF_OPEN = "half_open"  #: one probe call goes through; its outcome decides


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures -> half-open after
    ``cooldown_s`` -> closed on the probe's success (or open again on its failure).

    In half-open only one probe is in flight at a time; other calls fail fast. The
    state is observable (``state``, ``consecutive_failures``, ``opened_total``) and every
    transition is reported to ``on_change(old, new)``, e.g. for a metrics gauge.
    """

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.consecutive_failures = 0
        #: How many times the breaker has opened since it was made.
        self.opened_total = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose cool-down is over reads half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def before_call(self) -> None:
        """Admit one call or raise :class:`HisCircuitOpenError` without sending it."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return
        remaining = max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
        raise HisCircuitOpenError(
            f"circuit open after {self.consecutive_failures} consecutive failures",
            retry_after_s=remaining,
        )

    def record_success(self) -> None:
        """The HIS answered (a refusal is an answer too): close the circuit."""
        self._probe_in_flight = False
        self.consecutive_failures = 0
        if self._state is not BreakerState.CLOSED:
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """No usable answer: count it; open at the threshold or when a probe failed."""
        self.consecutive_failures += 1
        probe = self._probe_in_flight
        self._probe_in_flight = False
        if probe or (
            self._state is BreakerState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self.opened_total += 1
            self._move(BreakerState.OPEN)

    def record_abandoned(self) -> None:
        """The call ended without an outcome (cancelled): free the probe, change nothing."""
        self._probe_in_flight = False

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new)


class TokenBucket:
    """At most ``burst`` calls at once, refilled at ``rate_per_s``: over any window of T
    seconds, at most ``burst + rate_per_s * T`` calls pass. Waiters pass in FIFO order."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait for one token and take it."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate_per_s)


class FullJitterBackoff:
    """A stamina backoff hook: which errors to retry, and how long to wait.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the n-th
    wait is uniform in ``[0, min(max_s, initial_s * 2**(n-1))]``, so clients that failed
    together do not retry together. A ``Retry-After`` from the HIS is a floor (capped at
    ``max_s``). An open circuit is never retried: the breaker already said no.
    One instance per call: it counts that call's failures.
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng
        self.failures = 0

    def __call__(self, exc: BaseException) -> bool | float:
        if isinstance(exc, HisCircuitOpenError) or not isinstance(exc, HisUnavailableError):
            return False
        self.failures += 1
        ceiling = min(self._max_s, self._initial_s * 2 ** (self.failures - 1))
        wait = self._rng.uniform(0.0, ceiling)
        if exc.retry_after_s is not None:
            wait = max(wait, min(exc.retry_after_s, self._max_s))
        return wait
