"""Rate limits with a Cluster master down: a reserve for a tag on a live master is not
refused because the account's or the address's bucket hashed to the dead one (the
bucket is skipped and counted), and buckets on live masters still limit."""

from __future__ import annotations

from typing import Any

import pytest

from inventory import metrics
from inventory.api.ratelimit import ReserveRateLimiter
from inventory.config import RateLimit
from inventory.domain import HospitalPolicy
from inventory.errors import RateLimitedError
from inventory.redis_client import connect_redis
from inventory.servers import RedisClusterServers
from inventory.store import PolicyBook, SlotStore

from ..lua.conftest import VISIT_DATE, ManualClock, Scenario
from .conftest import cluster_url, department_on, kill_and_wait_flagged, subject_on

POLICY = HospitalPolicy(one_per_day=False)


def _skipped(bucket: str) -> float:
    return metrics.RATE_LIMIT_UNAVAILABLE.labels(bucket=bucket)._value.get()


@pytest.mark.cluster
async def test_reserves_on_live_masters_go_on_when_a_bucket_lives_on_the_dead_one(
    cluster: RedisClusterServers,
) -> None:
    """One master of three dead (cluster-require-full-coverage no): reserves for a tag on
    a live master succeed although the account's and the address's buckets hash to the
    dead master (each skip counted by bucket); an account bucket on a live master still
    refuses past its limit."""
    client: Any = await connect_redis(cluster_url(cluster), cluster=True)
    try:
        clock = ManualClock()
        store = await SlotStore.connect_scripts(
            client, clock=clock, policies=PolicyBook(default=POLICY)
        )
        scenario = Scenario(
            store=store,
            clock=clock,
            client=client,
            department_id=department_on(1, VISIT_DATE, "rl-live-"),
        )
        await store.load_schedule(scenario.schedule({"s1": 50}))
        limiter = ReserveRateLimiter(store, per_account=RateLimit(2, 60), per_ip=RateLimit(100, 60))
        dead_account = subject_on(0, "acct", "acct-dead-")
        dead_ip = subject_on(0, "ip", "10.0.0.")
        live_account = subject_on(2, "acct", "acct-live-")
        kill_and_wait_flagged(cluster, cluster.nodes[0])
        before = {bucket: _skipped(bucket) for bucket in ("account", "ip")}

        for n in range(4):  # twice the account's limit: its bucket cannot be counted
            buckets = limiter.buckets(account_id=dead_account, client_ip=dead_ip)
            outcome = await store.reserve(
                scenario.request("s1", account_id=dead_account, patient_id=f"pd-{n}"),
                rate_limits=buckets,
            )
            assert outcome.hold.slot_id == "s1"
        assert _skipped("account") - before["account"] == 4
        assert _skipped("ip") - before["ip"] == 4

        for n in range(2):
            await store.reserve(
                scenario.request("s1", account_id=live_account, patient_id=f"pl-{n}"),
                rate_limits=limiter.buckets(account_id=live_account, client_ip=dead_ip),
            )
        with pytest.raises(RateLimitedError) as refused:
            await store.reserve(
                scenario.request("s1", account_id=live_account, patient_id="pl-2"),
                rate_limits=limiter.buckets(account_id=live_account, client_ip=dead_ip),
            )
        assert refused.value.context["buckets"] == [1]
        counts = await store.slot_counts(scenario.tag, ["s1"])
        assert counts["s1"].held == 6
    finally:
        await client.aclose()
