"""Rate limits on reserve, per account and per client address, kept in Redis so they
hold across every API process (lua/rate_limit.lua, GCRA).

Both buckets are checked by one script call on a single Redis server, which also makes
the check all-or-nothing (a refused request consumes neither bucket). On Redis Cluster
the two buckets live under different hash tags, so each gets its own call there, sent
together."""

from __future__ import annotations

import asyncio
import math

from inventory import keys, metrics
from inventory.config import RateLimit
from inventory.errors import InventoryError, RateLimitedError
from inventory.store import SlotStore

_BUCKET_LABELS = {"acct": "account", "ip": "ip"}


class ReserveRateLimiter:
    """Checks the account's and the address's buckets together; either one refusing
    refuses the request."""

    def __init__(
        self,
        store: SlotStore,
        *,
        per_account: RateLimit,
        per_ip: RateLimit,
        one_call: bool = True,
    ) -> None:
        self._store = store
        self._limits = {
            kind: limit for kind, limit in (("acct", per_account), ("ip", per_ip)) if limit.enabled
        }
        self._one_call = one_call

    async def check(self, *, account_id: str, client_ip: str) -> None:
        """Count one reserve; :class:`RateLimitedError` with ``retry_after_s`` if over."""
        buckets = [
            (kind, keys.rate_limit_key(kind, account_id if kind == "acct" else client_ip))
            for kind in self._limits
        ]
        if not buckets:
            return
        if self._one_call or len(buckets) == 1:
            retry_ms = await self._hit(buckets)
        else:
            retry_ms = max(await asyncio.gather(*(self._hit([bucket]) for bucket in buckets)))
        if retry_ms > 0:
            raise RateLimitedError(retry_after_s=max(1, math.ceil(retry_ms / 1000)))

    async def _hit(self, buckets: list[tuple[str, str]]) -> int:
        """One script call over ``buckets``: 0 when counted, else ms to wait."""
        args: list[int | float] = [self._store.script_now()]
        for kind, _ in buckets:
            limit = self._limits[kind]
            args += [limit.per_s * 1000 / limit.count, limit.count]
        reply = await self._store.call_script("rate_limit", [key for _, key in buckets], args)
        allowed = int(reply[0])
        if allowed == 1:
            return 0
        if allowed != 0:
            raise InventoryError(f"rate_limit refused its arguments ({allowed})")
        for index in reply[2:]:
            kind = buckets[int(index) - 1][0]
            metrics.RATE_LIMITED.labels(bucket=_BUCKET_LABELS[kind]).inc()
        return int(reply[1])
