"""What the long-running loops share: which failures are "a server is away, try again",
and a capped, jittered exponential back-off.

A loop of the worker (persister, expirer, fence monitor, sampler, the HIS flows) must
outlive any Redis or Postgres outage: it logs a warning, waits a jittered, growing delay
and tries again, so that a Redis restart or a Postgres failover never stops it. Any other
exception is a bug: it ends the loop, and the worker process exits non-zero so that its
supervisor (systemd ``Restart=on-failure``, compose's restart policy, ``inventory dev``)
starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
import redis.exceptions

from inventory.errors import InventoryError

__all__ = ["TRANSIENT_ERRORS", "Backoff", "sleep_unless_stopped"]

TRANSIENT_ERRORS: Final[tuple[type[BaseException], ...]] = (
    # The service's own typed failures: store_unavailable, database_unavailable, a fenced
    # or unverified store, a refused step.
    InventoryError,
    # redis-py: ConnectionError (BusyLoadingError while a restarted server loads its
    # append-only file), TimeoutError, and replies such as READONLY or MASTERDOWN during
    # a failover.
    redis.exceptions.RedisError,
    # asyncpg: server errors, and client-side states of a connection that broke mid-call
    # (InterfaceError, "cannot switch to state ...; another operation is in progress").
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    # Refused, reset or timed-out sockets, from either driver.
    OSError,
    TimeoutError,
)
"""Failures a loop logs, backs off from and retries; anything else is a bug."""


class Backoff:
    """Capped exponential back-off, jittered: many processes (and loops) that lost the
    same server do not come back to it in step."""

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None):
        if not 0 < initial_s <= max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self._initial = initial_s
        self._max = max_s
        self._next = initial_s
        self._rng = rng or random.Random()
        #: Failures since the last :meth:`reset` (for logs).
        self.failures = 0

    def reset(self) -> None:
        """Back to the first delay (after a success)."""
        self._next = self._initial
        self.failures = 0

    def next_delay(self) -> float:
        """The next wait in seconds: uniform in [delay/2, delay], delay doubling up to
        the cap (half of it at least, so a loop never spins)."""
        delay = self._next
        self._next = min(self._max, self._next * 2)
        self.failures += 1
        return self._rng.uniform(delay / 2, delay)


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
