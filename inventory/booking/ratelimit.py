"""Rate limits on reserve, per account and per client address, kept in Redis so they
hold across every API process (GCRA, lua/includes/gcra.lua).

Both buckets are counted together, all or nothing (a refused request consumes neither
bucket). On a single Redis server they ride in the reserve script's own call (see
:meth:`SlotStore.reserve`), so a reserve is one round trip; requests that must ask
Postgres first are counted by a call of their own beforehand (:meth:`count`), so a
refused caller never reaches Postgres. On Redis Cluster the two buckets live under
different hash tags, so each gets its own call there, sent together, and each counts
on its own (:meth:`SlotStore.take_rate_limits`).

On Cluster a bucket whose node is out of reach is skipped (fail-open) and counted in
``inventory_rate_limit_unavailable_total``: a bucket hashes to any master, so failing
closed would stop reserves for every tag, on live masters too, for the accounts and
addresses whose buckets live on the dead one (docs/durability.md, "Redis Cluster")."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import structlog

from inventory.errors import RateLimitedError
from inventory.ops import metrics
from inventory.ops.config import RateLimit
from inventory.store import keys
from inventory.store.slot_store import RateBuckets, SlotStore

_BUCKET_LABELS = {"acct": "account", "ip": "ip"}
#: (account, address) pairs whose buckets are remembered per process; past this the
#: memory starts over (a bound, not a working size).
_BUCKETS_REMEMBERED = 50_000
#: Reserves whose peer address is looked at for the missing-header warning. Behind an
#: ingress every peer is the ingress, so the first requests tell; past them the check
#: costs nothing on the hot path.
_PEER_CHECKS = 1000

log = structlog.get_logger(__name__)


def is_internal_address(address: str) -> bool:
    """Whether ``address`` is loopback or private (RFC 1918, ULA, link-local, ...): the
    address of a proxy or load balancer, rarely of a patient's phone."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


class ReserveRateLimiter:
    """The account's and the address's buckets; either one refusing refuses the
    request."""

    def __init__(
        self,
        store: SlotStore,
        *,
        per_account: RateLimit,
        per_ip: RateLimit,
        client_ip_header: str = "",
    ) -> None:
        self._store = store
        self._limits = {
            kind: limit for kind, limit in (("acct", per_account), ("ip", per_ip)) if limit.enabled
        }
        # Each bucket's script arguments (interval ms, burst), fixed for the process.
        self._args = tuple(
            value
            for limit in self._limits.values()
            for value in (limit.per_s * 1000 / limit.count, limit.count)
        )
        # The buckets of the pairs seen lately: the names are digests (SHA-256 of the
        # account and of the address), the same for every reserve of a session, so
        # they are made once per process instead of on every reserve.
        self._buckets: dict[tuple[str, str], RateBuckets] = {}
        #: Reserves left to look at for a proxy in front of an API that reads no client
        #: header (0: not looking, because the limit is off or the header is set).
        self._peer_checks = _PEER_CHECKS if "ip" in self._limits and not client_ip_header else 0

    def buckets(self, *, account_id: str, client_ip: str) -> RateBuckets | None:
        """The request's buckets (None when no limit is on), for the reserve call."""
        if not self._limits:
            return None
        if self._peer_checks:
            self._check_peer(client_ip)
        found = self._buckets.get((account_id, client_ip))
        if found is None:
            names = tuple(
                keys.rate_limit_key(kind, account_id if kind == "acct" else client_ip)
                for kind in self._limits
            )
            found = RateBuckets(names, self._args, unavailable=self.unavailable)
            if len(self._buckets) >= _BUCKETS_REMEMBERED:
                self._buckets.clear()
            self._buckets[(account_id, client_ip)] = found
        return found

    def _check_peer(self, client_ip: str) -> None:
        """Warn once when reserves arrive from an internal address while no client
        header is read: behind an ingress every patient then shares its one bucket, and
        a release-day crowd is refused with 429 after the first few reserves."""
        self._peer_checks -= 1
        if is_internal_address(client_ip):
            self._peer_checks = 0
            log.warning(
                "ratelimit.client_ip_header_missing",
                peer=client_ip,
                detail="the per-address reserve limit is on, INVENTORY_CLIENT_IP_HEADER is "
                "not set and reserves come from a loopback or private address: behind a "
                "proxy every client shares that address's bucket; set "
                "INVENTORY_CLIENT_IP_HEADER (and INVENTORY_TRUSTED_PROXY_HOPS), or "
                "INVENTORY_RESERVE_RATE_PER_IP=0/1 to turn the per-address limit off",
            )

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

    def unavailable(self, indexes: Sequence[int]) -> None:
        """Count buckets skipped because their node was out of reach, by bucket."""
        kinds = list(self._limits)
        for index in indexes:
            metrics.RATE_LIMIT_UNAVAILABLE.labels(bucket=_BUCKET_LABELS[kinds[index - 1]]).inc()

    def refused(self, error: RateLimitedError) -> None:
        """Count a refusal in the metrics, by the bucket that refused."""
        kinds = list(self._limits)
        for index in error.context.get("buckets", ()):
            metrics.RATE_LIMITED.labels(bucket=_BUCKET_LABELS[kinds[int(index) - 1]]).inc()
