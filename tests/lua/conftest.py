"""Fixtures for the store and script tests: a real Redis, standalone and Cluster.

Every test works in department-day tags of its own (random department ids), so no
test ever flushes a server; the same tests run against a standalone Redis and a
3-master Redis Cluster (the ``cluster`` marker selects the latter).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from inventory.domain import HospitalPolicy, ReserveRequest, ScheduleSpec, SlotSpec
from inventory.store import keys
from inventory.store.slot_store import PolicyBook, SlotStore

CHINA = timezone(timedelta(hours=8))
#: The logical "now" every test starts at: a week before the visit date below.
START = datetime(2027, 3, 1, 9, 0, tzinfo=CHINA)
VISIT_DATE = date(2027, 3, 8)


@dataclass
class ManualClock:
    """A logical clock in epoch ms that tests move forward by hand."""

    now_ms: int = int(START.timestamp() * 1000)

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += int(seconds * 1000)


def fresh_id(prefix: str) -> str:
    """A unique id, so tests never share keys on a shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Scenario:
    """One hospital, department and visit date with helpers to build requests."""

    store: SlotStore
    clock: ManualClock
    client: Any
    hospital_id: str = field(default_factory=lambda: fresh_id("h"))
    department_id: str = field(default_factory=lambda: fresh_id("d"))
    visit_date: date = VISIT_DATE

    @property
    def tag(self) -> str:
        return keys.department_day_tag(self.department_id, self.visit_date)

    @property
    def tag_keys(self) -> keys.TagKeys:
        return keys.tag_keys(self.tag)

    def schedule(
        self,
        capacities: dict[str, int],
        *,
        schedule_id: str | None = None,
        release_at: datetime | None = None,
        starts_at: datetime | None = None,
        cancel_deadline: datetime | None = None,
        fee_fen: int = 5000,
    ) -> ScheduleSpec:
        start = starts_at or datetime.combine(self.visit_date, datetime.min.time(), CHINA).replace(
            hour=8
        )
        return ScheduleSpec(
            schedule_id=schedule_id or fresh_id("s"),
            hospital_id=self.hospital_id,
            department_id=self.department_id,
            visit_date=self.visit_date,
            release_at=release_at or START - timedelta(hours=1),
            starts_at=start,
            ends_at=start + timedelta(hours=4),
            cancel_deadline=cancel_deadline or start - timedelta(hours=16),
            fee_fen=fee_fen,
            slots=tuple(SlotSpec(slot, cap) for slot, cap in capacities.items()),
        )

    def request(
        self,
        slot_id: str,
        *,
        patient_id: str | None = None,
        account_id: str | None = None,
        key: str | None = None,
        channel: str = "wechat",
    ) -> ReserveRequest:
        return ReserveRequest(
            hospital_id=self.hospital_id,
            department_id=self.department_id,
            visit_date=self.visit_date,
            slot_id=slot_id,
            account_id=account_id or fresh_id("a"),
            patient_id=patient_id or fresh_id("p"),
            channel=channel,
            idempotency_key=key or uuid.uuid4().hex,
        )


@pytest.fixture(
    scope="session",
    params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)],
)
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A redis-py asyncio client: a standalone server, then a 3-master Cluster."""
    if request.param == "standalone":
        server = request.getfixturevalue("redis_server")
        pool = BlockingConnectionPool.from_url(
            server.url, max_connections=64, timeout=20, decode_responses=True
        )
        client: Any = Redis(connection_pool=pool)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
        client = RedisCluster(startup_nodes=nodes, decode_responses=True, max_connections=256)
        await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    """A fresh logical clock at START."""
    return ManualClock()


def make_store(client: Any, clock: ManualClock, policy: HospitalPolicy | None = None) -> Any:
    """Coroutine building a store on ``client`` judged by ``clock``."""
    return SlotStore.connect_scripts(
        client, clock=clock, policies=PolicyBook(default=policy or HospitalPolicy())
    )


@pytest.fixture
async def scenario(redis_client: Any, clock: ManualClock) -> Scenario:
    """A store with the default policy and a fresh hospital/department/day."""
    store = await make_store(redis_client, clock)
    return Scenario(store=store, clock=clock, client=redis_client)
