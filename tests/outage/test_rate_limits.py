"""Rate limits with a Cluster master down: a reserve for a tag on a live master is not
refused because the account's or the address's bucket hashed to the dead one (the
bucket is skipped and counted), and buckets on live masters still limit."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory.booking.ratelimit import ReserveRateLimiter
from inventory.devtools.servers import RedisClusterServers
from inventory.domain import HospitalPolicy
from inventory.errors import RateLimitedError
from inventory.ops import metrics
from inventory.ops.config import RateLimit
from inventory.store import keys
from inventory.store.connection import connect_redis
from inventory.store.slot_store import PolicyBook, SlotStore
from tests.databases import Databases

from ..api.helpers import Catalogue, register_patient
from ..durability.test_cluster_node_loss import deploy
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


@pytest.mark.cluster
async def test_the_api_takes_reserves_whose_account_bucket_is_on_a_dead_master(
    cluster: RedisClusterServers, databases: Databases, tmp_path: Path
) -> None:
    """Through the real API and worker: the master holding an account's rate-limit
    bucket is killed; that account's reserves for a tag on a live master answer 201 (the
    first one, of a slot and patient the process has not seen, counted by a call of its
    own before Postgres is asked; the next ones inside the reserve), and /metrics counts
    the skipped buckets."""
    async with deploy(cluster, databases, tmp_path) as running:
        api = running.api
        async with aiohttp.ClientSession() as http:
            cat = await Catalogue(api, http).create()
            _, slots, day = await cat.schedule([10])
            tag = keys.department_day_tag(cat.department_id, day)
            tag_node = running.node_of(tag)
            dead = next(i for i, node in enumerate(cluster.nodes) if node is not tag_node)
            account = subject_on(dead, "acct", "acct-api-")
            patients = [await register_patient(api, http, account) for _ in range(3)]
            await asyncio.to_thread(kill_and_wait_flagged, cluster, cluster.nodes[dead])
            for patient in patients:
                async with http.post(
                    api.url + "/v1/holds",
                    json={"slot_id": slots[0], "patient_id": patient, "channel": "wechat"},
                    headers=api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
                ) as answer:
                    assert answer.status == 201, await answer.text()
            async with http.get(api.url + "/metrics") as answer:
                text = await answer.text()
        skipped = [
            line
            for line in text.splitlines()
            if line.startswith('inventory_rate_limit_unavailable_total{bucket="account"}')
        ]
        assert skipped
        assert float(skipped[0].split()[-1]) >= 3
