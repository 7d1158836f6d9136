"""A Redis Cluster node lost, with or without its data, under a real API process and a
real worker: a node restarted empty refuses every change of its tags (operator PUT,
the HIS sync's load path, reserves) until `inventory rebuild`, 0 oversold; a dead
master answers 503 store_unavailable with Retry-After, fast, and readiness says so."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from inventory import errors
from inventory.devtools.servers import (
    RedisClusterServers,
    RedisServer,
    free_port,
    start_redis_cluster,
)
from inventory.record.catalogue import PgCatalogue
from inventory.record.pool import create_pool
from inventory.recovery.rebuild import rebuild
from inventory.store import keys
from inventory.store.connection import connect_redis
from inventory.store.slot_store import SlotStore
from tests.databases import Databases

from ..api.conftest import ApiServer, api_env, launch_api, stop_api
from ..api.helpers import Catalogue, register_patient, uid
from .stack import start_worker

pytestmark = pytest.mark.cluster

#: Refusals that keep a node restarted without its data from selling: the gate (its
#: run id not yet compared) or the fence (compared: behind Postgres).
REFUSED = {"store_unverified", "store_fenced"}


@dataclass
class Deployment:
    """A private 3-master Cluster with an API process and a worker on it."""

    cluster: RedisClusterServers
    api: ApiServer
    worker: subprocess.Popen[bytes]
    pool: Any
    store: SlotStore
    worker_env: dict[str, str]
    tmp_path: Path

    async def current_node_of(self, tag: str) -> RedisServer:
        """The server holding ``tag`` once this client's slot map caught up (a command
        to a dead node makes redis-py read the map again)."""
        for _ in range(50):
            try:
                await self.store.client.hget(keys.tag_keys(tag).meta, "seq")
                break
            except Exception:  # the old primary, dead: the map is read again
                await asyncio.sleep(0.2)
        return self.node_of(tag)

    def node_of(self, tag: str) -> RedisServer:
        """The server holding ``tag`` now."""
        name = self.store.client.get_node_from_key(keys.tag_keys(tag).meta).name
        return next(n for n in self.cluster.all_nodes if f"{n.host}:{n.port}" == name)


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Cluster of this module's own (its nodes get killed and wiped)."""
    with start_redis_cluster(tmp_path_factory.mktemp("cluster-loss"), masters=3) as cluster:
        yield cluster


@contextlib.asynccontextmanager
async def deploy(
    cluster: RedisClusterServers, databases: Databases, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """The API and the worker (fence every 0.2 s) on ``cluster``, ready."""
    database_url = await databases.create()
    # Every node as a start-up node: a process (re)started while one is dead still starts.
    env = api_env(",".join(node.url for node in cluster.all_nodes), database_url, free_port())
    env |= {"INVENTORY_REDIS_CLUSTER": "true", "INVENTORY_FENCE_INTERVAL_S": "0.2"}
    worker_env = env | {"INVENTORY_WORKER_METRICS_PORT": "0"}
    worker = start_worker(worker_env, tmp_path / "worker.log")
    api = launch_api(env, tmp_path / "api.log")
    process = api.process
    pool = await create_pool(database_url, min_size=1, max_size=4)
    client = await connect_redis(cluster.url, cluster=True)
    store = await SlotStore.connect_scripts(client)
    deployment = Deployment(cluster, api, worker, pool, store, worker_env, tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, api, timeout_s=30)
        yield deployment
    finally:
        stop_api(process)
        stop_api(deployment.worker)
        await pool.close()
        await client.aclose()


@pytest.fixture
async def deployment(
    private_cluster: RedisClusterServers, databases: Databases, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """The API and the worker on the private Cluster, every node running."""
    for node in private_cluster.nodes:
        if not node.running:
            node.restart()
    async with deploy(private_cluster, databases, tmp_path) as running:
        yield running


async def wait_ready(http: aiohttp.ClientSession, api: ApiServer, *, timeout_s: float) -> None:
    """Wait until /readyz answers 200."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        async with http.get(api.url + "/readyz") as answer:
            body = await answer.json()
            if answer.status == 200:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the API did not get ready: {body}")


async def reserve(
    http: aiohttp.ClientSession, api: ApiServer, slot: str, account: str, patient: str
) -> tuple[int, dict[str, Any], float]:
    """POST /v1/holds: (status, body, seconds taken)."""
    started = time.monotonic()
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": slot, "patient_id": patient, "channel": "wechat"},
        headers=api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        body = await answer.json(content_type=None)
        return answer.status, body, time.monotonic() - started


async def book(http: aiohttp.ClientSession, api: ApiServer, slot: str) -> str:
    """Reserve and confirm one unit for a new patient."""
    account = uid("acct")
    patient = await register_patient(api, http, account)
    status, hold, _ = await reserve(http, api, slot, account, patient)
    assert status == 201, hold
    async with http.post(
        api.url + f"/v1/holds/{hold['hold_id']}/confirm",
        json={"payment_ref": "wx"},
        headers=api.headers(account),
    ) as answer:
        assert answer.status == 200, await answer.text()
    return str(hold["hold_id"])


async def postgres_seq(pool: Any, tag: str) -> int:
    """The highest seq Postgres recorded for ``tag``."""
    async with pool.acquire() as conn:
        value = await conn.fetchval("SELECT last_seq FROM tag_sequences WHERE tag = $1", tag)
    return int(value or 0)


async def booked_in_postgres(pool: Any, slot: str) -> int:
    """Bookings of ``slot`` Postgres holds (confirmed, not ended)."""
    async with pool.acquire() as conn:
        value = await conn.fetchval(
            "SELECT count(*) FROM holds WHERE slot_id = $1 AND state = 'booked'", slot
        )
    return int(value)


async def test_node_restarted_without_its_data_sells_nothing_twice(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A tag's node restarted without its data: the operator's PUT of the same schedule,
    the HIS sync's load path and a reserve in the first seconds are all refused, the
    worker fences the tag within seconds, and after `inventory rebuild` the slot is
    still sold out: 0 oversold."""
    api, pool = deployment.api, deployment.pool
    async with aiohttp.ClientSession() as http:
        cat = await Catalogue(api, http).create()
        schedule_id, slots, day = await cat.schedule([2])
        tag = keys.department_day_tag(cat.department_id, day)
        for _ in range(2):
            await book(http, api, slots[0])
        seq = 0
        for _ in range(100):  # the persister records both bookings
            seq = await postgres_seq(pool, tag)
            if await booked_in_postgres(pool, slots[0]) == 2 and seq >= 5:
                break
            await asyncio.sleep(0.1)
        assert await booked_in_postgres(pool, slots[0]) == 2
        account = uid("acct")
        patient = await register_patient(api, http, account)
        put_body = await operator_schedule(pool, schedule_id)

        node = deployment.node_of(tag)
        node.restart_empty()
        restarted = time.monotonic()
        answers: list[tuple[str, int, str]] = []
        # The HIS sync's load path, in a process that has no gate (as the worker).
        catalogue = PgCatalogue(pool, deployment.store)
        fenced_at: float | None = None
        while time.monotonic() - restarted < 3.0:
            async with http.put(
                api.url + f"/v1/operator/schedules/{schedule_id}", json=put_body, headers=cat.op
            ) as answer:
                body = await answer.json(content_type=None)
                answers.append(("put", answer.status, str(body.get("code"))))
            status, body, _ = await reserve(http, api, slots[0], account, patient)
            answers.append(("reserve", status, str(body.get("code"))))
            try:
                await catalogue.load_schedule_into_store(schedule_id)
            except (errors.StoreFencedError, errors.StoreUnavailableError) as error:
                answers.append(("load", 503, error.code))
            else:
                answers.append(("load", 200, "loaded"))
            if fenced_at is None and await fenced(deployment, tag):
                fenced_at = time.monotonic() - restarted
            await asyncio.sleep(0.05)
        assert answers
        refused = [a for a in answers if a[1] == 503 and a[2] in REFUSED]
        # A request may meet the node before it accepts connections (store_unavailable);
        # none may succeed.
        assert all(a[1] == 503 for a in answers), answers
        assert {a[0] for a in refused} == {"put", "reserve", "load"}, answers
        assert fenced_at is not None, answers
        assert fenced_at < 3.0, (fenced_at, answers)

        report = await rebuild(deployment.store, pool, only_fenced=True)
        assert tag in report.tags
        status, body, _ = await reserve(http, api, slots[0], account, patient)
        assert (status, body.get("code")) == (409, "sold_out"), body
        async with http.put(
            api.url + f"/v1/operator/schedules/{schedule_id}", json=put_body, headers=cat.op
        ) as answer:
            view = await answer.json()
            assert answer.status == 200, view
        assert [s["remaining"] for s in view["items"]] == [0]
    assert await booked_in_postgres(pool, slots[0]) == 2


async def fenced(deployment: Deployment, tag: str) -> bool:
    """Whether ``tag`` is fenced in Redis now."""
    try:
        meta = keys.tag_keys(tag).meta
        return await deployment.store.client.hget(meta, "fenced") == "1"
    except Exception:  # the node may not answer yet
        return False


async def operator_schedule(pool: Any, schedule_id: str) -> dict[str, Any]:
    """The body of an operator PUT of the schedule as Postgres has it (a retry)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM schedules WHERE id = $1", schedule_id)
        slots = await conn.fetch(
            "SELECT id, starts_at, ends_at, capacity FROM slots WHERE schedule_id = $1 ORDER BY id",
            schedule_id,
        )
    return {
        "hospital_id": row["hospital_id"],
        "department_id": row["department_id"],
        "doctor_id": row["doctor_id"],
        "visit_date": row["visit_date"].isoformat(),
        "session": row["session"],
        "starts_at": row["starts_at"].isoformat(),
        "ends_at": row["ends_at"].isoformat(),
        "release_at": row["release_at"].isoformat(),
        "cancel_deadline": row["cancel_deadline"].isoformat(),
        "fee_fen": row["fee_fen"],
        "location": row["location"],
        "slots": [
            {
                "slot_id": s["id"],
                "starts_at": s["starts_at"].isoformat(),
                "ends_at": s["ends_at"].isoformat(),
                "capacity": s["capacity"],
            }
            for s in slots
        ],
    }


async def test_dead_master_answers_503_fast_and_readiness_fails(deployment: Deployment) -> None:
    """With a tag's master dead, reserves and availability reads answer 503
    store_unavailable with Retry-After in well under a second, and /readyz is 503
    naming the node; once the cluster is down (cluster_state:fail), tags of live nodes
    answer the same 503, never a 500; once the node is back on its data, so is the
    service."""
    api = deployment.api
    async with aiohttp.ClientSession() as http:
        cat = await Catalogue(api, http).create()
        schedule_id, slots, day = await cat.schedule([3])
        tag = keys.department_day_tag(cat.department_id, day)
        node = deployment.node_of(tag)
        # A second schedule whose tag lives on another (live) node.
        other_day = next(
            day + timedelta(days=n)
            for n in range(1, 60)
            if deployment.node_of(tag_of(cat, day + timedelta(days=n))) is not node
        )
        other_tag = tag_of(cat, other_day)
        other_schedule, other_slots, _ = await cat.schedule([3], visit_date=other_day)
        account = uid("acct")
        patient = await register_patient(api, http, account)
        node.kill()
        try:
            timings = []
            for _ in range(5):
                status, body, took, retry_after = await reserve_answer(
                    http, api, slots[0], account, patient
                )
                assert (status, body.get("code")) == (503, "store_unavailable"), body
                assert retry_after
                timings.append(took)
                status, body, retry_after = await availability(http, api, schedule_id)
                assert (status, body.get("code")) == (503, "store_unavailable"), body
                assert retry_after
            assert sorted(timings)[len(timings) // 2] < 1.0, timings
            async with http.get(api.url + "/readyz") as answer:
                ready = await answer.json()
                assert answer.status == 503, ready
                assert f"{node.port}" in ready["checks"]["redis"], ready
            # The live nodes notice the failure after cluster-node-timeout (5 s here)
            # and refuse every key with CLUSTERDOWN: still a 503, never a 500.
            await wait_cluster_state(deployment, deployment.node_of(other_tag), "fail")
            status, body, took, retry_after = await reserve_answer(
                http, api, other_slots[0], account, patient
            )
            # A 503 to retry, never a 500. With Redis 7.0 it is store_unavailable; with the
            # pip-shipped Valkey 9 it was store_unverified once (the change met a node on a
            # new connection, whose run id the gate had not checked yet): both are safe.
            assert status == 503, body
            assert body.get("code") in ("store_unavailable", "store_unverified"), body
            assert retry_after
            # Well under the 4-9 s a failing request took before the client failed fast;
            # measured 0.3-2.2 s here (redis-py rereads the slot map once per call, and a
            # reserve makes several), so the bound leaves room for two shared CPUs.
            assert took < 3.0, took
            status, body, retry_after = await availability(http, api, other_schedule)
            assert (status, body.get("code")) == (503, "store_unavailable"), body
            assert retry_after
        finally:
            node.restart()
        await wait_ready(http, api, timeout_s=30)
        status, body, _ = await reserve(http, api, slots[0], account, patient)
        assert status == 201, body


def tag_of(cat: Catalogue, day: date) -> str:
    """The tag of the catalogue's department on ``day``."""
    return keys.department_day_tag(cat.department_id, day)


async def wait_cluster_state(deployment: Deployment, node: RedisServer, state: str) -> None:
    """Wait until ``node`` reports ``cluster_state:<state>``."""
    target = deployment.store.client.get_node(node.host, node.port)
    for _ in range(100):
        info = await deployment.store.client.cluster_info(target_nodes=target)
        if info.get("cluster_state") == state:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{node.port} did not report cluster_state:{state}")


async def reserve_answer(
    http: aiohttp.ClientSession, api: ApiServer, slot: str, account: str, patient: str
) -> tuple[int, dict[str, Any], float, str | None]:
    """POST /v1/holds: (status, body, seconds taken, Retry-After)."""
    started = time.monotonic()
    async with http.post(
        api.url + "/v1/holds",
        json={"slot_id": slot, "patient_id": patient, "channel": "wechat"},
        headers=api.headers(account) | {"Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        body = await answer.json(content_type=None)
        return answer.status, body, time.monotonic() - started, answer.headers.get("Retry-After")


async def availability(
    http: aiohttp.ClientSession, api: ApiServer, schedule_id: str
) -> tuple[int, dict[str, Any], str | None]:
    """GET a schedule's slots: (status, body, Retry-After)."""
    async with http.get(api.url + f"/v1/schedules/{schedule_id}/slots") as answer:
        body = await answer.json(content_type=None)
        return answer.status, body, answer.headers.get("Retry-After")


@pytest.fixture(scope="module")
def replicated_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisClusterServers]:
    """3 masters with a replica each, failing over after 1 s (Redis Cluster's own)."""
    with start_redis_cluster(
        tmp_path_factory.mktemp("cluster-failover"),
        masters=3,
        replicas_per_master=1,
        node_timeout_ms=1000,
    ) as cluster:
        yield cluster


async def test_promoted_replica_is_refused_until_the_fence_compared_it(
    replicated_cluster: RedisClusterServers, databases: Databases, tmp_path: Path
) -> None:
    """A tag's master dies and Redis Cluster promotes its replica: the promoted node has a
    run id no fence has compared, so the tag's changes answer 503 store_unverified (never
    201, never 500) while no worker runs, tags of other nodes keep selling; once the worker
    runs, its fence compares the new primary within seconds and the tag sells again."""
    async with deploy(replicated_cluster, databases, tmp_path) as deployment:
        api = deployment.api
        async with aiohttp.ClientSession() as http:
            cat = await Catalogue(api, http).create()
            _, slots, day = await cat.schedule([5])
            tag = tag_of(cat, day)
            master = deployment.node_of(tag)
            other_day = next(
                day + timedelta(days=n)
                for n in range(1, 60)
                if deployment.node_of(tag_of(cat, day + timedelta(days=n))) is not master
            )
            _, other_slots, _ = await cat.schedule([5], visit_date=other_day)
            await book(http, api, slots[0])
            stop_api(deployment.worker)  # no fence from here on
            master.kill()
            account = uid("acct")
            patient = await register_patient(api, http, account)
            seen: list[tuple[int, str]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, body, _ = await reserve(http, api, slots[0], account, patient)
                seen.append((status, str(body.get("code"))))
                assert status != 201, seen
                assert status != 500, body
                if (status, body.get("code")) == (503, "store_unverified"):
                    break
                await asyncio.sleep(0.2)
            assert seen[-1] == (503, "store_unverified"), seen
            promoted = await deployment.current_node_of(tag)
            assert promoted is not master
            assert promoted in replicated_cluster.replicas
            for _ in range(5):  # the gate stays closed without the fence
                status, body, _ = await reserve(http, api, slots[0], account, patient)
                assert (status, body.get("code")) == (503, "store_unverified"), body
                await asyncio.sleep(0.2)
            other_account = uid("acct")
            other_patient = await register_patient(api, http, other_account)
            status, body, _ = await reserve(http, api, other_slots[0], other_account, other_patient)
            assert status == 201, body

            deployment.worker = start_worker(deployment.worker_env, tmp_path / "worker2.log")
            started = time.monotonic()
            while time.monotonic() - started < 20:
                status, body, _ = await reserve(http, api, slots[0], account, patient)
                assert status in (201, 503), body
                if status == 201:
                    break
                assert body.get("code") in ("store_unverified", "store_unavailable"), body
                await asyncio.sleep(0.2)
            assert status == 201, body
            # The replica had every write: nothing behind, nothing fenced.
            assert not await fenced(deployment, tag)
