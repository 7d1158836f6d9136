"""Rate limits on reserve, per account and per client address, kept in Redis so they
hold across every API process (GCRA, lua/includes/gcra.lua).

Both buckets are counted together, all or nothing (a refused request consumes neither
bucket). On a single Redis server they ride in the reserve script's own call (see
:meth:`SlotStore.reserve`), so a reserve is one round trip; requests that must ask
Postgres first are counted by a call of their own beforehand (:meth:`count`), so a
refused caller never reaches Postgres. On Redis Cluster the two buckets live under
different hash tags, so each gets its own call there, sent together, and each counts
on its own (:meth:`SlotStore.take_rate_limits`)."""

from __future__ import annotations

from inventory import keys, metrics
from inventory.config import RateLimit
from inventory.errors import RateLimitedError
from inventory.store import RateBuckets, SlotStore

_BUCKET_LABELS = {"acct": "account", "ip": "ip"}


class ReserveRateLimiter:
    """The account's and the address's buckets; either one refusing refuses the
    request."""

    def __init__(self, store: SlotStore, *, per_account: RateLimit, per_ip: RateLimit) -> None:
        self._store = store
        self._limits = {
            kind: limit for kind, limit in (("acct", per_account), ("ip", per_ip)) if limit.enabled
        }

    def buckets(self, *, account_id: str, client_ip: str) -> RateBuckets | None:
        """The request's buckets (None when no limit is on), for the reserve call."""
        if not self._limits:
            return None
        names: list[str] = []
        args: list[float] = []
        for kind, limit in self._limits.items():
            names.append(keys.rate_limit_key(kind, account_id if kind == "acct" else client_ip))
            args += [limit.per_s * 1000 / limit.count, limit.count]
        return RateBuckets(tuple(names), tuple(args))

    async def count(self, buckets: RateBuckets | None) -> None:
        """Count one request in ``buckets`` now, by a call of its own:
        :class:`RateLimitedError` with ``retry_after_s`` if over (and the refusal
        counted in the metrics)."""
        if buckets is None:
            return
        try:
            await self._store.take_rate_limits(buckets)
        except RateLimitedError as limited:
            self.refused(limited)
            raise

    def refused(self, error: RateLimitedError) -> None:
        """Count a refusal in the metrics, by the bucket that refused."""
        kinds = list(self._limits)
        for index in error.context.get("buckets", ()):
            metrics.RATE_LIMITED.labels(bucket=_BUCKET_LABELS[kinds[int(index) - 1]]).inc()
