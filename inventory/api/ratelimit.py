"""Rate limits on reserve, per account and per client address, kept in Redis so they
hold across every API process (lua/rate_limit.lua, GCRA)."""

from __future__ import annotations

import asyncio
import math

from inventory import keys, metrics
from inventory.config import RateLimit
from inventory.errors import RateLimitedError
from inventory.store import SlotStore


class ReserveRateLimiter:
    """Checks the account's and the address's buckets together (one round trip each,
    concurrently); either one refusing refuses the request."""

    def __init__(self, store: SlotStore, *, per_account: RateLimit, per_ip: RateLimit) -> None:
        self._store = store
        self._limits = {"acct": per_account, "ip": per_ip}

    async def check(self, *, account_id: str, client_ip: str) -> None:
        """Count one reserve; :class:`RateLimitedError` with ``retry_after_s`` if over."""
        checks = [
            self._hit(kind, subject)
            for kind, subject in (("acct", account_id), ("ip", client_ip))
            if self._limits[kind].enabled
        ]
        if not checks:
            return
        retry_ms = max(await asyncio.gather(*checks))
        if retry_ms > 0:
            raise RateLimitedError(retry_after_s=max(1, math.ceil(retry_ms / 1000)))

    async def _hit(self, kind: str, subject: str) -> int:
        limit = self._limits[kind]
        interval_ms = limit.per_s * 1000 / limit.count
        reply = await self._store.call_script(
            "rate_limit", [keys.rate_limit_key(kind, subject)], [0, interval_ms, limit.count]
        )
        if int(reply[0]) == 1:
            return 0
        metrics.RATE_LIMITED.labels(bucket="account" if kind == "acct" else "ip").inc()
        return int(reply[1])
