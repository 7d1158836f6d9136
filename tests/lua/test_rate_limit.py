"""lua/rate_limit.lua through ReserveRateLimiter on a logical clock: bursts, refill,
Retry-After, all-or-nothing over two buckets, one call per bucket on Cluster."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from inventory import errors
from inventory.booking.ratelimit import ReserveRateLimiter
from inventory.domain import HospitalPolicy
from inventory.errors import InventoryError, RateLimitedError
from inventory.ops.config import RateLimit
from inventory.store.slot_store import RateBuckets

from .conftest import ManualClock, Scenario, fresh_id, make_store


def limiter(scenario: Scenario, account: str, ip: str) -> ReserveRateLimiter:
    return ReserveRateLimiter(
        scenario.store,
        per_account=RateLimit.parse(account),
        per_ip=RateLimit.parse(ip),
    )


async def attempts(limits: ReserveRateLimiter, n: int, account: str, ip: str) -> list[Any]:
    """``n`` checks: None for allowed, else the Retry-After in seconds."""
    found: list[Any] = []
    for _ in range(n):
        try:
            await limits.count(limits.buckets(account_id=account, client_ip=ip))
            found.append(None)
        except RateLimitedError as error:
            found.append(error.context["retry_after_s"])
    return found


async def test_burst_then_refill(scenario: Scenario) -> None:
    """3 per 6 s: three at once, the fourth waits 2 s (one interval), and one more is
    allowed once an interval has passed."""
    limits = limiter(scenario, "3/6", "0/1")
    account = fresh_id("acct")
    assert await attempts(limits, 4, account, "10.0.0.1") == [None, None, None, 2]
    scenario.clock.advance(1.5)
    assert await attempts(limits, 1, account, "10.0.0.1") == [1]  # 0.5 s left: rounds up
    scenario.clock.advance(0.5)
    assert await attempts(limits, 2, account, "10.0.0.1") == [None, 2]


async def test_a_refusal_consumes_neither_bucket(scenario: Scenario) -> None:
    """The address's bucket is full: the account's requests are refused and not
    counted, so the account can still use its whole burst from another address."""
    limits = limiter(scenario, "2/60", "1/60")
    account, other = fresh_id("acct"), fresh_id("acct")
    ip = fresh_id("ip")
    assert await attempts(limits, 1, other, ip) == [None]
    refused = await attempts(limits, 3, account, ip)
    assert all(retry is not None for retry in refused)
    if isinstance(scenario.client, RedisCluster):
        # One call per bucket on Cluster: there each bucket counts on its own.
        return
    fresh_addresses = [await attempts(limits, 1, account, fresh_id("ip")) for _ in range(3)]
    assert fresh_addresses == [[None], [None], [30]]


async def test_each_subject_has_its_own_bucket(scenario: Scenario) -> None:
    limits = limiter(scenario, "1/60", "100/1")
    first, second = fresh_id("acct"), fresh_id("acct")
    assert await attempts(limits, 2, first, "10.0.0.2") == [None, 60]
    assert await attempts(limits, 1, second, "10.0.0.2") == [None]


async def test_disabled_limits_never_call_redis(scenario: Scenario) -> None:
    limits = limiter(scenario, "0/1", "0/1")
    assert await attempts(limits, 50, fresh_id("acct"), "10.0.0.3") == [None] * 50


@pytest.mark.parametrize(
    "args",
    [
        [0, 0, 1],  # zero interval
        [0, 100, 0],  # zero burst
        [0, "x", 1],
        [0, 100],  # an argument missing
        [0, 100, 1, 5],  # one too many
    ],
)
async def test_bad_arguments_are_refused(scenario: Scenario, args: list[Any]) -> None:
    reply = await scenario.store.call_script("rate_limit", [f"inv:rl:{{t:{fresh_id('k')}}}"], args)
    assert [int(part) for part in reply] == [-20, 0]


async def test_reply_codes(scenario: Scenario) -> None:
    """A counted request answers OK and a refused one rate_limited with the wait and the
    refusing bucket: the codes of every script (lua/includes/codes.lua), as reserve
    answers for the same buckets."""
    key = f"inv:rl:{{t:{fresh_id('k')}}}"
    args = [scenario.clock.now_ms, 60_000, 1]
    counted = await scenario.store.call_script("rate_limit", [key], args)
    refused = await scenario.store.call_script("rate_limit", [key], args)
    assert [int(part) for part in counted] == [errors.LUA_OK, 0]
    assert [int(part) for part in refused] == [RateLimitedError.lua_code, 60_000, 1]


async def test_limiter_raises_on_a_refused_argument(scenario: Scenario) -> None:
    """A script refusing the limiter's own arguments is a bug, never 'allowed'."""
    limits = ReserveRateLimiter(
        scenario.store, per_account=RateLimit(1, 1e-9), per_ip=RateLimit(0, 1)
    )
    # A negative burst slipped past parse (RateLimit(-1, 1)): the script arguments the
    # limiter computed for it once, at start.
    limits._args = (1 * 1000 / -1, -1)
    with pytest.raises(InventoryError, match="rate_limit refused"):
        await limits.count(limits.buckets(account_id=fresh_id("acct"), client_ip="10.0.0.4"))


# -- the buckets passed to reserve (one call on a single server) ---------------------


async def _loaded(scenario: Scenario, capacity: int = 10) -> None:
    await scenario.store.load_schedule(scenario.schedule({"slot-a": capacity}))


@pytest.mark.parametrize("policy", [HospitalPolicy(), HospitalPolicy(max_open_per_patient=5)])
async def test_reserve_counts_its_buckets_and_refuses_past_them(
    redis_client: Any, clock: ManualClock, policy: HospitalPolicy
) -> None:
    """Reserves passing an account's buckets: the burst is held, the next is refused
    with rate_limited and the refusing bucket, holding nothing and counting nothing
    (the other bucket still has its room); after an interval one more is held. With
    a two-step rule (max open per patient) the buckets are counted before the token."""
    scenario = Scenario(
        store=await make_store(redis_client, clock, policy), clock=clock, client=redis_client
    )
    await _loaded(scenario)
    limits = limiter(scenario, "2/60", "3/60")
    account, address = fresh_id("acct"), fresh_id("ip")
    buckets = limits.buckets(account_id=account, client_ip=address)
    assert buckets is not None
    for _ in range(2):
        await scenario.store.reserve(
            scenario.request("slot-a", account_id=account), rate_limits=buckets
        )
    with pytest.raises(RateLimitedError) as refused:
        await scenario.store.reserve(
            scenario.request("slot-a", account_id=account), rate_limits=buckets
        )
    assert refused.value.context == {"retry_after_s": 30, "buckets": [1]}
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"].held == 2
    if isinstance(redis_client, RedisCluster):
        return  # one call per bucket there: the address's bucket counted the refusal
    # The address's bucket counted two, not three: one more from another account.
    other = limits.buckets(account_id=fresh_id("acct"), client_ip=address)
    assert other is not None
    await scenario.store.reserve(scenario.request("slot-a"), rate_limits=other)
    with pytest.raises(RateLimitedError) as by_address:
        await scenario.store.reserve(scenario.request("slot-a"), rate_limits=other)
    assert by_address.value.context["buckets"] == [2]
    clock.advance(30)
    await scenario.store.reserve(
        scenario.request("slot-a", account_id=account), rate_limits=buckets
    )
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"].held == 4


async def test_reserve_rate_limit_comes_before_every_other_refusal(scenario: Scenario) -> None:
    """A caller over its limit learns that first, whatever else is wrong (here: the
    slot does not exist), exactly like the separate check before the reserve."""
    await _loaded(scenario)
    limits = limiter(scenario, "1/60", "0/1")
    buckets = limits.buckets(account_id=fresh_id("acct"), client_ip=fresh_id("ip"))
    assert buckets is not None
    with pytest.raises(errors.SlotNotFoundError):
        await scenario.store.reserve(scenario.request("slot-none"), rate_limits=buckets)
    with pytest.raises(RateLimitedError):
        await scenario.store.reserve(scenario.request("slot-none"), rate_limits=buckets)


async def test_reserve_refuses_bad_bucket_arguments(scenario: Scenario) -> None:
    """A bucket with a zero interval is the caller's bug: invalid_argument, nothing held."""
    await _loaded(scenario)
    bad = RateBuckets((f"inv:rl:{{t:{fresh_id('k')}}}",), (0.0, 1.0))
    with pytest.raises(errors.InvalidArgumentError):
        await scenario.store.reserve(scenario.request("slot-a"), rate_limits=bad)
    counts = await scenario.store.slot_counts(scenario.tag, ["slot-a"])
    assert counts["slot-a"].held == 0
